"""HF LLaMA-family weights → GGUF tensors and hyper-parameters, for the exporter.

Why the Q/K permutation: Hugging Face's LLaMA checkpoints store the rotary
halves of each attention head as [first half | second half] ("rotate_half"),
while llama.cpp's LLaMA graph rotates interleaved pairs (GPT-J style, as the
original Meta checkpoints). llama.cpp's own converter therefore permutes the
rows of q_proj and k_proj back; we do the same, per KV head for k_proj (GQA).
Qwen2 uses llama.cpp's NEOX rope and is written unpermuted.
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
    """How one HF architecture is written: llama.cpp arch and whether Q/K need permuting."""

    gguf_arch: gguf.MODEL_ARCH
    permute_qk: bool


ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "MistralForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "Qwen2ForCausalLM": ArchSpec(gguf.MODEL_ARCH.QWEN2, permute_qk=False),
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


def rope_theta(cfg: dict[str, Any]) -> float:
    """transformers 5 moved rope_theta into rope_parameters; read either."""
    params = cfg.get("rope_parameters") or {}
    return float(cfg.get("rope_theta", params.get("rope_theta", 10000.0)))


def rope_scaling(cfg: dict[str, Any]) -> dict[str, Any] | None:
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters") or None
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    return None if kind in (None, "default") else scaling


def head_dim(cfg: dict[str, Any]) -> int:
    return int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])


def add_hparams(writer: gguf.GGUFWriter, cfg: dict[str, Any], spec: ArchSpec) -> None:
    """Model hyper-parameters under the llama.cpp keys of the target architecture."""
    n_head = int(cfg["num_attention_heads"])
    writer.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads") or n_head))
    writer.add_rope_freq_base(rope_theta(cfg))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(cfg["vocab_size"]))
    hd = head_dim(cfg)
    writer.add_rope_dimension_count(hd)
    if hd != int(cfg["hidden_size"]) // n_head:
        writer.add_key_length(hd)
        writer.add_value_length(hd)
    scaling = rope_scaling(cfg)
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(scaling["factor"]))
        elif kind == "llama3" and spec.gguf_arch == gguf.MODEL_ARCH.LLAMA:
            pass  # written as the rope_freqs tensor, see llama3_rope_factors()
        else:
            raise TensorError(f"RoPE scaling {kind!r} is not supported by the exporter (supported: linear, llama3)")


def llama3_rope_factors(cfg: dict[str, Any]) -> np.ndarray | None:
    """Llama-3.1 style frequency-dependent RoPE scaling, as the per-dimension factors llama.cpp reads."""
    scaling = rope_scaling(cfg)
    if scaling is None or scaling.get("rope_type", scaling.get("type")) != "llama3":
        return None
    dim = head_dim(cfg)
    base = rope_theta(cfg)
    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for i in range(0, dim, 2):
        freq = 1.0 / base ** (i / dim)
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


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


def _skip(hf_name: str, cfg: dict[str, Any]) -> bool:
    if hf_name.endswith(("rotary_emb.inv_freq", ".masked_bias", ".attn.bias")):
        return True
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
        if _skip(hf_name, cfg):
            continue
        new_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            unknown.append(hf_name)
            continue
        qtype = matrix_type if len(shape) >= 2 else gguf.GGMLQuantizationType.F32
        heads = None
        if spec.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            heads = n_head
        elif spec.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            heads = n_kv

        def make(load: Callable[[], Any] = load, heads: int | None = heads, qtype=qtype) -> np.ndarray:
            tensor = load()
            if heads is not None:
                tensor = permute_rotary(tensor, heads)
            return to_numpy(tensor, qtype)

        planned.append(PlannedTensor(new_name, qtype, tuple(shape), make))
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise TensorError(f"the checkpoint has tensors the {spec.gguf_arch.name.lower()} layout does not know: {shown}")
    factors = llama3_rope_factors(cfg)
    if factors is not None:
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        planned.append(PlannedTensor(name, gguf.GGMLQuantizationType.F32, factors.shape, lambda f=factors: f))  # type: ignore[misc]  # default binds now
    have = {p.name for p in planned}
    if "token_embd.weight" not in have:
        raise TensorError("the checkpoint has no token embedding (model.embed_tokens.weight)")
    return planned
