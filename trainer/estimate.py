"""GPU memory needed to fine-tune: method x model size x batch x sequence length (the wizard's estimate).

Pure arithmetic, no torch: the GUI calls it while the user moves sliders. The figure is a
planning estimate for one GPU (one process, no ZeRO/FSDP sharding); it leaves out the CUDA
context (~0.3-1 GB), allocator fragmentation and temporary buffers, so the wizard compares
it with the GPU's memory with a margin (`MemoryBreakdown.fits`).

Sources of the numbers (checked against the published texts):

- Full fine-tune with AdamW in mixed precision: 16 bytes per parameter. ZeRO (Rajbhandari et
  al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models", section 3.1):
  fp16 parameters 2Ψ + fp16 gradients 2Ψ + optimizer states KΨ with K = 12 (fp32 master copy,
  momentum and variance) = 16Ψ bytes; their example: a 7.5B-parameter model needs 120 GB for
  its model states alone. Pure fp32 training needs the same 16 bytes (4 + 4 + 8, no master copy).
- LoRA (Hu et al. 2021): the base stays frozen (16-bit: 2 bytes per parameter, no gradients or
  optimizer state); only the adapters train. Adapter weights are kept in fp32 by peft, so they
  cost 4 (weight) + 4 (gradient) + 8 (Adam) = 16 bytes per trainable parameter.
- LoRA on an 8-bit base: bitsandbytes LLM.int8() (Dettmers et al. 2022, "LLM.int8(): 8-bit Matrix
  Multiplication for Transformers at Scale") stores the linear layers' weights in int8, which "cut
  the memory needed for inference by half": 1 byte per parameter of the quantized linear layers.
- QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs"): 4-bit NF4 weights,
  0.5 byte per parameter, plus quantization constants: one fp32 constant per block of 64 weights is
  32/64 = 0.5 bit per parameter; double quantization brings that down to 8/64 + 32/(64*256) ≈ 0.127
  bit per parameter. The paper's headline: a 65B model fine-tuned on a single 48 GB GPU.
  In both quantized methods the embeddings and lm_head are not quantized (they are not Linear
  layers bitsandbytes replaces / transformers keeps lm_head out), and peft's
  `prepare_model_for_kbit_training` casts these remaining weights to fp32: 4 bytes each here.
- Activations: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
  Models", section 4.1: per transformer layer s*b*h*(34 + 5*a*s/h) bytes in 16-bit training
  without recomputation (s sequence length, b micro batch, h hidden size, a attention heads).
  With full recomputation (gradient checkpointing) only each layer's input is stored, 2*s*b*h
  bytes per layer, plus one layer's full activations while it is recomputed in the backward pass.
  Logits: s*b*vocab values, held in 16-bit, upcast to fp32 for the loss, with an fp32 gradient
  (2 + 4 + 4 bytes). fp32 training doubles the activations.

The tests (tests/test_train_estimate.py) hold the estimate to published figures: ZeRO's 120 GB for
7.5B, > 100 GB for a full fine-tune of LLaMA-7B, QLoRA's 65B on 48 GB (with this app's default
adapters), and the usual planning bounds for LLaMA-7B LoRA (14-20 GB) and QLoRA (< 12 GB).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

METHODS = ("full", "lora", "lora-8bit", "qlora")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
GB = 1e9

# Bytes per parameter (see the module docstring for the sources).
ADAM_MIXED_PRECISION = 16  # ZeRO: 2 (fp16 weights) + 2 (fp16 grads) + 12 (fp32 master, momentum, variance)
ADAPTER_TRAINABLE = 16  # fp32 adapter weight 4 + gradient 4 + Adam 8
INT8_WEIGHT = 1.0  # LLM.int8()
NF4_WEIGHT = 0.5  # QLoRA NF4
NF4_CONSTANTS_BITS = 8 / 64 + 32 / (64 * 256)  # QLoRA double quantization, ≈ 0.127 bit per parameter
NF4_CONSTANTS_BITS_SINGLE = 32 / 64  # without double quantization
KBIT_UNQUANTIZED = 4  # embeddings, lm_head, norms cast to fp32 by prepare_model_for_kbit_training


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes, by what holds them; `total` is their sum."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    total: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    trainable_params: int = 0

    @property
    def total_gb(self) -> float:
        return self.total / GB

    def fits(self, gpu_bytes: int, margin: float = 0.15) -> bool:
        """Whether it fits a GPU of `gpu_bytes`, keeping `margin` of it free for context and fragmentation."""
        return self.total <= gpu_bytes * (1 - margin)

    def describe(self) -> str:
        """'≈ 17.2 GB (weights 13.5 GB, gradients 0.0 GB, optimizer 0.1 GB, activations 3.6 GB)'."""
        parts = ", ".join(f"{name} {getattr(self, name) / GB:.1f} GB"
                          for name in ("weights", "gradients", "optimizer", "activations"))
        return f"≈ {self.total / GB:.1f} GB ({parts})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


def lora_trainable_params(hidden: int, layers: int, lora_r: int, n_target_modules_per_layer: int,
                          intermediate: int | None = None) -> int:
    """Adapter parameters: r x (d_in + d_out) per adapted module, modules taken as hidden x hidden.

    (q_proj and v_proj of LLaMA are hidden x hidden: LLaMA-7B with r 8 on both has 4,194,304.)
    With `intermediate` and more than 4 modules per layer, the modules past 4 are taken as MLP
    projections hidden x intermediate.
    """
    square = min(n_target_modules_per_layer, 4) if intermediate else n_target_modules_per_layer
    mlp = n_target_modules_per_layer - square
    per_layer = square * lora_r * 2 * hidden + mlp * lora_r * (hidden + (intermediate or hidden))
    return layers * per_layer


def activation_bytes(micro_batch: int, seq_len: int, hidden: int, layers: int, heads: int, vocab: int,
                     gradient_checkpointing: bool, precision: str = "bf16") -> int:
    """Korthikanti et al. 2022 (see the module docstring), plus the logits."""
    s, b, h = seq_len, micro_batch, hidden
    scale = 2 if precision == "fp32" else 1  # the formula counts 16-bit values
    full_layer = s * b * h * (34 + 5 * heads * s / h)
    if gradient_checkpointing:
        body = layers * 2 * s * b * h + full_layer
    else:
        body = layers * full_layer
    logits = s * b * vocab * (2 + 4 + 4)
    return int(body * scale + logits)


def estimate_training_memory(
    params: int,
    method: str,
    micro_batch: int,
    seq_len: int,
    hidden: int,
    layers: int,
    vocab: int,
    gradient_checkpointing: bool,
    precision: str = "auto",
    lora_r: int = 8,
    n_target_modules_per_layer: int = 2,
    heads: int | None = None,
    intermediate: int | None = None,
    tied_embeddings: bool = False,
    double_quant: bool = True,
) -> MemoryBreakdown:
    """GPU memory to fine-tune a model of `params` parameters on one GPU (see the module docstring).

    `heads` defaults to hidden / 128 (LLaMA's head size). `precision` "auto" counts as 16-bit
    mixed precision (what "auto" picks on a GPU).
    """
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    for name, value in (("params", params), ("micro_batch", micro_batch), ("seq_len", seq_len),
                        ("hidden", hidden), ("layers", layers), ("vocab", vocab)):
        if value <= 0:
            raise ValueError(f"{name}: must be positive, got {value}")
    heads = heads or max(1, hidden // 128)
    fp32 = precision == "fp32"
    notes: list[str] = []

    embedding_params = min(params, vocab * hidden * (1 if tied_embeddings else 2))
    linear_params = params - embedding_params  # the transformer blocks (norms are negligible)

    weights: float
    if method == "full":
        weights = params * (4 if fp32 else 2)
        gradients = params * (4 if fp32 else 2)
        optimizer = params * (8 if fp32 else 12)
        trainable = params
        notes.append("Full fine-tune with AdamW: 16 bytes per parameter (ZeRO, Rajbhandari et al. 2020); "
                     "several GPUs with FSDP split this between them.")
    else:
        trainable = lora_trainable_params(hidden, layers, lora_r, n_target_modules_per_layer, intermediate)
        if method == "lora":
            weights = params * (4 if fp32 else 2)
            notes.append("LoRA: frozen base in 16-bit (2 bytes per parameter), fp32 adapters.")
        elif method == "lora-8bit":
            weights = linear_params * INT8_WEIGHT + embedding_params * KBIT_UNQUANTIZED
            notes.append("LoRA on an 8-bit base: int8 linear layers, 1 byte per parameter (LLM.int8(), "
                         "Dettmers et al. 2022); embeddings and lm_head stay unquantized.")
        else:
            bits = NF4_CONSTANTS_BITS if double_quant else NF4_CONSTANTS_BITS_SINGLE
            weights = linear_params * (NF4_WEIGHT + bits / 8) + embedding_params * KBIT_UNQUANTIZED
            notes.append("QLoRA: 4-bit NF4 base, 0.5 byte per parameter plus "
                         f"{bits:.3f} bit of quantization constants (Dettmers et al. 2023).")
        weights = int(weights) + trainable * 4
        gradients = trainable * 4
        optimizer = trainable * 8

    activations = activation_bytes(micro_batch, seq_len, hidden, layers, heads, vocab, gradient_checkpointing,
                                   precision)
    if not gradient_checkpointing and activations > 0.3 * (weights + gradients + optimizer + activations):
        checkpointed_gb = activation_bytes(micro_batch, seq_len, hidden, layers, heads, vocab, True, precision) / GB
        notes.append("Activations are a large share: gradient checkpointing would cut them to about "
                     f"{checkpointed_gb:.1f} GB "
                     "(~30 % slower).")
    notes.append("Leaves out the CUDA context (~0.3-1 GB) and fragmentation: keep ~15 % of the GPU free.")
    weights, gradients, optimizer = int(weights), int(gradients), int(optimizer)
    total = weights + gradients + optimizer + activations
    return MemoryBreakdown(weights=weights, gradients=gradients, optimizer=optimizer, activations=activations,
                           total=total, notes=tuple(notes), trainable_params=int(trainable))


# ---------------------------------------------------------------- from a Hugging Face config.json

def _first(config: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return None


def params_from_hf_config(config: dict[str, Any]) -> int:
    """Parameter count of a decoder-only model from its config.json (LLaMA-style blocks).

    Attention q/o are hidden x hidden, k/v hidden x (kv_heads x head_dim); the MLP has three
    projections (gate, up, down) where `intermediate_size` is given (LLaMA, Mistral, Qwen), else
    two of 4 x hidden (GPT-2 style). LLaMA-7B: 6,738,415,616 (6.74B, as published).
    """
    hidden = int(_first(config, "hidden_size", "n_embd", "d_model"))
    layers = int(_first(config, "num_hidden_layers", "n_layer", "num_layers"))
    vocab = int(config["vocab_size"])
    heads = int(_first(config, "num_attention_heads", "n_head") or max(1, hidden // 128))
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    intermediate = config.get("intermediate_size")
    mlp = 3 * hidden * int(intermediate) if intermediate else 2 * hidden * int(config.get("n_inner") or 4 * hidden)
    norms = 2 * hidden
    tied = bool(config.get("tie_word_embeddings", False))
    embeddings = vocab * hidden * (1 if tied else 2)
    return layers * (attention + mlp + norms) + embeddings + hidden


def estimate_from_hf_config(config: dict[str, Any], method: str, micro_batch: int, seq_len: int,
                            gradient_checkpointing: bool, precision: str = "auto", lora_r: int = 8,
                            n_target_modules_per_layer: int = 2, params: int | None = None) -> MemoryBreakdown:
    """`estimate_training_memory` with the shape read from a model's config.json (a dict)."""
    hidden = int(_first(config, "hidden_size", "n_embd", "d_model"))
    layers = int(_first(config, "num_hidden_layers", "n_layer", "num_layers"))
    heads = _first(config, "num_attention_heads", "n_head")
    intermediate = config.get("intermediate_size")
    return estimate_training_memory(
        params=params or params_from_hf_config(config), method=method, micro_batch=micro_batch, seq_len=seq_len,
        hidden=hidden, layers=layers, vocab=int(config["vocab_size"]),
        gradient_checkpointing=gradient_checkpointing, precision=precision, lora_r=lora_r,
        n_target_modules_per_layer=n_target_modules_per_layer, heads=int(heads) if heads else None,
        intermediate=int(intermediate) if intermediate else None,
        tied_embeddings=bool(config.get("tie_word_embeddings", False)))
