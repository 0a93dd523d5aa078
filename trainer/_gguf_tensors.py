"""HF weights → GGUF tensors and hyper-parameters, for the exporter, as llama.cpp's converter writes them.

The reference is convert_hf_to_gguf.py of the llama.cpp that loads the file (perf/export_vs_llamacpp.py
compares the two for every architecture below, tensor for tensor and key for key).

Why the Q/K permutation: Hugging Face's LLaMA checkpoints store the rotary
halves of each attention head as [first half | second half] ("rotate_half"),
while llama.cpp's LLaMA graph rotates interleaved pairs (GPT-J style, as the
original Meta checkpoints). llama.cpp's own converter therefore permutes the
rows of q_proj and k_proj back; we do the same, per KV head for k_proj (GQA).
Qwen, Gemma and Phi-3 use llama.cpp's NEOX rope and are written unpermuted. Gemma stores its
norms as w + 1 (its RMSNorm multiplies by 1 + w); Phi-3's fused qkv and gate_up projections are
written fused, as llama.cpp's Phi-3 graph splits them itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np


@dataclass(frozen=True)
class ArchSpec:
    """How one HF architecture is written, as llama.cpp's convert_hf_to_gguf.py writes it.

    `hparams` names the reference's set_gguf_parameters flavour (see add_hparams);
    `norm_shift`: Gemma's RMSNorm scales by (1 + w), llama.cpp's by w, so w + 1 is stored;
    `vocab`: "default" or "phi3" (Phi-3 also marks tokenizer.json's added tokens);
    `add_space_prefix`: written for SentencePiece vocabularies when set (Gemma: False).
    """

    gguf_arch: gguf.MODEL_ARCH
    permute_qk: bool = False
    hparams: str = "base"
    norm_shift: bool = False
    vocab: str = "default"
    add_space_prefix: bool | None = None


ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True, hparams="llama"),
    "MistralForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True, hparams="llama"),
    "Qwen2ForCausalLM": ArchSpec(gguf.MODEL_ARCH.QWEN2),
    "Qwen3ForCausalLM": ArchSpec(gguf.MODEL_ARCH.QWEN3),
    "Gemma2ForCausalLM": ArchSpec(gguf.MODEL_ARCH.GEMMA2, hparams="gemma2", norm_shift=True, add_space_prefix=False),
    "Gemma3ForCausalLM": ArchSpec(gguf.MODEL_ARCH.GEMMA3, hparams="gemma3", norm_shift=True, add_space_prefix=False),
    "Phi3ForCausalLM": ArchSpec(gguf.MODEL_ARCH.PHI3, hparams="phi3", vocab="phi3"),
}

#: Output type name → (GGML tensor type for 2-D weights, file type recorded in the header).
DIRECT_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}


class TensorError(ValueError):
    """The checkpoint's weights do not fit what the architecture needs."""


def permute_rotary(weights: Any, n_head: int) -> Any:
    """Reorder rows from HF's half-split rotary layout to llama.cpp's interleaved one."""
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def rope_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings gathered as the reference reads them: transformers 5's rope_parameters, or the
    older rope_scaling plus top-level rope_theta / partial_rotary_factor / original_max_position_embeddings."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if "full_attention" in params or "sliding_attention" in params:
        return params
    local = _first(cfg, ("local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                         "rope_local_base_freq"))
    if local is not None:
        params["sliding_attention"] = {"rope_theta": local}
    theta = _first(cfg, ("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
                         "rotary_emb_base"))
    if "rope_theta" not in params and theta is not None:
        params["rope_theta"] = theta
    if "rope_type" not in params and params.get("type") is not None:
        params["rope_type"] = params["type"]
    for key in ("partial_rotary_factor", "original_max_position_embeddings"):
        if key not in params and cfg.get(key) is not None:
            params[key] = cfg[key]
    return params


def _first(cfg: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((cfg[k] for k in keys if cfg.get(k) is not None), None)


def _global_rope(cfg: dict[str, Any]) -> dict[str, Any]:
    params = rope_params(cfg)
    return params.get("full_attention", params)


def head_dim(cfg: dict[str, Any]) -> int:
    return int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])


SUPPORTED_ROPE = ("default", "linear", "yarn", "llama3", "longrope", "su")


def _add_rope_scaling(writer: gguf.GGUFWriter, rope: dict[str, Any], spec: ArchSpec) -> None:
    kind = rope.get("rope_type")
    factor = rope.get("factor")
    if kind in (None, "default"):
        return
    if kind == "linear" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    elif kind == "yarn" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(factor)
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        for key, add in (("extrapolation_factor", writer.add_rope_scaling_yarn_ext_factor),
                         ("beta_fast", writer.add_rope_scaling_yarn_beta_fast),
                         ("beta_slow", writer.add_rope_scaling_yarn_beta_slow)):
            if rope.get(key) is not None:
                add(rope[key])
        if (attn := rope.get("attention_factor", rope.get("attn_factor"))) is not None:
            writer.add_rope_scaling_yarn_attn_factor(attn)
    elif kind in ("su", "longrope") and spec.hparams == "phi3":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
    elif kind == "llama3" and spec.gguf_arch == gguf.MODEL_ARCH.LLAMA:
        pass  # written as the rope_freqs tensor, see rope_tensors()
    else:
        raise TensorError(f"RoPE scaling {kind!r} is not supported by the exporter for this architecture")


def _base_hparams(writer: gguf.GGUFWriter, cfg: dict[str, Any], spec: ArchSpec) -> None:
    """The keys every text model gets (the reference's TextModel.set_gguf_parameters)."""
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    if cfg.get("max_position_embeddings") is not None:
        writer.add_context_length(int(cfg["max_position_embeddings"]))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(int(cfg["num_attention_heads"]))
    if cfg.get("num_key_value_heads") is not None:
        writer.add_head_count_kv(int(cfg["num_key_value_heads"]))
    rope = _global_rope(cfg)
    _add_rope_scaling(writer, rope, spec)
    if rope.get("rope_theta") is not None:
        writer.add_rope_freq_base(rope["rope_theta"])
    local = rope_params(cfg).get("sliding_attention", {}).get("rope_theta")
    if local is not None:
        writer.add_rope_freq_base_swa(local)
    if cfg.get("rms_norm_eps") is not None:
        writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    if cfg.get("head_dim") is not None:
        writer.add_key_length(int(cfg["head_dim"]))
        writer.add_value_length(int(cfg["head_dim"]))


def _llama_hparams(writer: gguf.GGUFWriter, cfg: dict[str, Any], spec: ArchSpec) -> None:
    _base_hparams(writer, cfg, spec)
    writer.add_vocab_size(int(cfg["vocab_size"]))
    writer.add_rope_dimension_count(head_dim(cfg))


def _gemma2_hparams(writer: gguf.GGUFWriter, cfg: dict[str, Any], spec: ArchSpec) -> None:
    """Gemma 2 writes its own short list; llama.cpp's Gemma 2 graph uses RoPE base 10000, as every release."""
    theta = _global_rope(cfg).get("rope_theta", 10000.0)
    if float(theta) != 10000.0:
        raise TensorError(f"a Gemma 2 model with RoPE base {theta} (llama.cpp's Gemma 2 assumes 10000)")
    writer.add_context_length(int(cfg["max_position_embeddings"]))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(int(cfg["num_attention_heads"]))
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_key_length(int(cfg["head_dim"]))
    writer.add_value_length(int(cfg["head_dim"]))
    writer.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
    writer.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    writer.add_sliding_window(int(cfg["sliding_window"]))


def _gemma3_hparams(writer: gguf.GGUFWriter, cfg: dict[str, Any], spec: ArchSpec) -> None:
    _base_hparams(writer, cfg, spec)
    writer.add_context_length(int(cfg.get("max_position_embeddings", 131072)))
    writer.add_head_count(int(cfg.get("num_attention_heads", 8)))
    writer.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    writer.add_key_length(int(cfg.get("head_dim", 256)))
    writer.add_value_length(int(cfg.get("head_dim", 256)))
    writer.add_rope_freq_base(_global_rope(cfg).get("rope_theta", 1_000_000.0))
    if cfg.get("attn_logit_softcapping") is not None:
        raise TensorError("a Gemma 3 model with attention soft-capping (llama.cpp's Gemma 3 has none)")
    if cfg.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    if cfg.get("sliding_window_pattern") != 1:
        writer.add_sliding_window(int(cfg["sliding_window"]))
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads", 4)))


def _phi3_rope_dims(cfg: dict[str, Any]) -> int:
    return int(float(rope_params(cfg).get("partial_rotary_factor", 1.0)) * int(cfg["hidden_size"])) // int(
        cfg["num_attention_heads"])


def _phi3_hparams(writer: gguf.GGUFWriter, cfg: dict[str, Any], spec: ArchSpec) -> None:
    rope = rope_params(cfg)
    if "original_max_position_embeddings" not in rope:
        raise TensorError("config.json has no original_max_position_embeddings, which Phi-3 models carry")
    writer.add_context_length(int(cfg["max_position_embeddings"]))
    writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_head_count(int(cfg["num_attention_heads"]))
    writer.add_head_count_kv(int(cfg["num_key_value_heads"]))
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_dimension_count(_phi3_rope_dims(cfg))
    writer.add_rope_freq_base(_global_rope(cfg)["rope_theta"])
    writer.add_sliding_window(int(cfg.get("sliding_window") or 0))  # 0 tells Phi-4 apart, as the reference does
    long_factors = rope.get("long_factor")
    if long_factors:
        scale = int(cfg["max_position_embeddings"]) / int(rope["original_max_position_embeddings"])
        kind = str(rope.get("rope_type", "")).lower()
        orig = int(rope["original_max_position_embeddings"])
        if kind in ("su", "longrope"):
            attn_factor = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
        elif kind == "yarn":
            attn_factor = 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
        else:
            raise TensorError(f"Phi-3 RoPE scaling {kind!r} is not supported by the exporter")
        writer.add_rope_scaling_attn_factors(attn_factor)
    elif rope.get("rope_type") not in (None, "default"):
        _add_rope_scaling(writer, rope, spec)


_HPARAMS: dict[str, Callable[[gguf.GGUFWriter, dict[str, Any], ArchSpec], None]] = {
    "base": _base_hparams, "llama": _llama_hparams, "gemma2": _gemma2_hparams, "gemma3": _gemma3_hparams,
    "phi3": _phi3_hparams,
}


def add_hparams(writer: gguf.GGUFWriter, cfg: dict[str, Any], spec: ArchSpec) -> None:
    """Model hyper-parameters under the llama.cpp keys of the target architecture."""
    _HPARAMS[spec.hparams](writer, cfg, spec)


def rope_tensors(cfg: dict[str, Any], spec: ArchSpec) -> list[tuple[str, np.ndarray]]:
    """Extra RoPE tensors: Llama 3.1's per-dimension factors, Phi-3's long/short factors."""
    import torch

    rope = _global_rope(cfg)
    kind = str(rope.get("rope_type", "")).lower()
    if kind == "llama3" and spec.gguf_arch == gguf.MODEL_ARCH.LLAMA:
        # float32 torch arithmetic, as the reference (and transformers) compute it, so the bytes agree
        base = rope.get("rope_theta", 10000.0)
        dim = head_dim(cfg)
        freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        factor = rope.get("factor", 8.0)
        low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
        old_ctx = rope.get("original_max_position_embeddings", 8192)
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        factors: list[Any] = []
        for freq in freqs:
            wavelen = 2 * math.pi / freq
            if wavelen < high_wavelen:
                factors.append(1)
            elif wavelen > low_wavelen:
                factors.append(factor)
            else:
                smooth = (old_ctx / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        values = torch.tensor(factors, dtype=torch.float32).numpy()
        return [(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", values)]
    if spec.hparams == "phi3" and rope_params(cfg).get("long_factor"):
        long_f, short_f = rope_params(cfg)["long_factor"], rope_params(cfg).get("short_factor")
        if short_f is None or len(long_f) != len(short_f) or len(long_f) != _phi3_rope_dims(cfg) / 2:
            raise TensorError("the Phi-3 long/short RoPE factors do not match the head size")
        return [(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight", np.asarray(long_f, np.float32)),
                (gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight",
                 np.asarray(short_f, np.float32))]
    return []


# --------------------------------------------------------------------------- sources


def safetensor_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    return sorted(model_dir.glob("*.safetensors"))


def pickle_files(model_dir: Path) -> list[Path]:
    return sorted([*model_dir.glob("pytorch_model*.bin"), *model_dir.glob("*.pt"), *model_dir.glob("*.pth")])


# --------------------------------------------------------------------------- mapping


@dataclass
class PlannedTensor:
    """One GGUF tensor: its name, type, shape, and how to produce its bytes when writing."""

    name: str
    qtype: gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    make: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        block, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        n = int(np.prod(self.shape)) if self.shape else 1
        return n // block * type_size


def _skip(hf_name: str, cfg: dict[str, Any], spec: ArchSpec) -> bool:
    if hf_name.endswith(("rotary_emb.inv_freq", ".masked_bias", ".attn.bias")):
        return True
    if hf_name == "lm_head.weight" and spec.hparams == "gemma2":
        return True  # llama.cpp's Gemma 2 always reuses the embedding, as the reference drops it
    return hf_name == "lm_head.weight" and bool(cfg.get("tie_word_embeddings", False))


def to_numpy(tensor: Any, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """Convert a torch tensor to the bytes GGUFWriter expects for `qtype`."""
    import torch

    t = tensor.detach().cpu()
    if qtype == gguf.GGMLQuantizationType.F32:
        return t.to(torch.float32).numpy()
    if qtype == gguf.GGMLQuantizationType.F16:
        return t.to(torch.float16).numpy()
    if qtype == gguf.GGMLQuantizationType.BF16:
        # torch rounds to nearest-even; the raw bits go in as uint8 bytes.
        return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8)
    raise TensorError(f"cannot write tensor type {qtype.name} directly")


def plan_tensors(
    names_and_loaders: list[tuple[str, Callable[[], Any], tuple[int, ...]]],
    cfg: dict[str, Any],
    spec: ArchSpec,
    out_type: str,
) -> list[PlannedTensor]:
    """Map every HF tensor to its GGUF name and type; fail before writing if one is unknown."""
    n_blocks = int(cfg["num_hidden_layers"])
    n_head = int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    name_map = gguf.get_tensor_name_map(spec.gguf_arch, n_blocks)
    matrix_type = DIRECT_TYPES[out_type][0]
    planned: list[PlannedTensor] = []
    unknown: list[str] = []
    for hf_name, load, shape in names_and_loaders:
        if _skip(hf_name, cfg, spec):
            continue
        new_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            unknown.append(hf_name)
            continue
        keep_f32 = len(shape) <= 1 or new_name.endswith("_norm.weight")
        qtype = gguf.GGMLQuantizationType.F32 if keep_f32 else matrix_type
        heads = None
        if spec.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            heads = n_head
        elif spec.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            heads = n_kv
        shift = spec.norm_shift and hf_name.endswith("norm.weight")

        def make(load: Callable[[], Any] = load, heads: int | None = heads, qtype=qtype,
                 shift: bool = shift) -> np.ndarray:
            import torch

            tensor = load()
            if tensor.dtype not in (torch.float16, torch.float32):
                tensor = tensor.to(torch.float32)  # the reference's order: widen, then shift or permute
            if shift:
                tensor = tensor + 1
            if heads is not None:
                tensor = permute_rotary(tensor, heads)
            return to_numpy(tensor, qtype)

        planned.append(PlannedTensor(new_name, qtype, tuple(shape), make))
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise TensorError(f"the checkpoint has tensors the {spec.gguf_arch.name.lower()} layout does not know: {shown}")
    for name, values in rope_tensors(cfg, spec):
        planned.append(PlannedTensor(name, gguf.GGMLQuantizationType.F32, values.shape,
                                     lambda v=values: v))  # type: ignore[misc]  # default binds now
    have = {p.name for p in planned}
    if "token_embd.weight" not in have:
        raise TensorError("the checkpoint has no token embedding (model.embed_tokens.weight)")
    return planned
