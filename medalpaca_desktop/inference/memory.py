"""Will this GGUF model fit? An estimate before loading, so "too big" is a clear refusal, not a crash.

(Hugging Face folders are checked in hf_load.check_memory, which knows the dtype and
bitsandbytes sizes; it shares free_ram() below so one memory cap applies to both.)

The estimate is deliberately simple and a little generous: weights (file size for
GGUF), the KV cache for the chosen context
(2 x layers x context x kv_heads x head_dim x 2 bytes, f16), and a compute/logits
buffer. It is compared with what psutil reports as available RAM, and with free
VRAM (nvidia-smi) for the part offloaded to a GPU. No torch import here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

import psutil

from medalpaca_desktop.core.model_info import ModelInfo, format_size

KV_BYTES = 2  # f16 keys and values (llama.cpp's and transformers' default cache type)
OVERHEAD_BYTES = 256 * 1024**2  # runtime, tokenizer, scratch buffers
HEADROOM = 0.95  # leave a little for the rest of the system


@dataclass
class MemoryEstimate:
    weights: int
    kv_cache: int
    compute: int
    on_gpu: int = 0  # part of the total that goes to VRAM
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute

    @property
    def on_cpu(self) -> int:
        return self.total - self.on_gpu

    def to_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "kv_cache": self.kv_cache, "compute": self.compute,
                "on_gpu": self.on_gpu, "total": self.total}


class MemoryRefusal(RuntimeError):
    """The model does not fit; the message says what to do instead."""


def kv_cache_bytes(layers: int | None, n_ctx: int, kv_heads: int | None, head_dim: int | None) -> int:
    if not (layers and kv_heads and head_dim):
        return 0
    return 2 * layers * n_ctx * kv_heads * head_dim * KV_BYTES


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def estimate_gguf(info: ModelInfo, n_ctx: int, n_gpu_layers: int = 0, head_count: int | None = None,
                  head_count_kv: int | None = None, n_batch: int = 512) -> MemoryEstimate:
    """Need of a GGUF model: mmap'd weights + f16 KV cache + logits/compute buffers."""
    extra = info.extra
    layers = _int(extra.get("block_count"))
    emb = _int(extra.get("embedding_length"))
    heads = _int(head_count) or (emb // 64 if emb else None)
    kv_heads = _int(head_count_kv) or heads
    head_dim = emb // heads if emb and heads else None
    vocab = _int(extra.get("vocab_size")) or 32000
    kv = kv_cache_bytes(layers, n_ctx, kv_heads, head_dim)
    compute = OVERHEAD_BYTES + vocab * n_batch * 4 + (emb or 4096) * n_batch * 4 * 8
    est = MemoryEstimate(weights=info.size_bytes, kv_cache=kv, compute=compute)
    if n_gpu_layers and layers:
        share = 1.0 if n_gpu_layers < 0 else min(1.0, n_gpu_layers / layers)
        est.on_gpu = int((info.size_bytes + kv) * share)
    return est


#: A cap (MiB) on the memory the app may plan to use, for shared machines; tests use it to refuse a model.
MEMORY_LIMIT_ENV = "MEDALPACA_MEMORY_LIMIT_MB"


def free_ram() -> int:
    """Available RAM, or less when the user capped it with MEDALPACA_MEMORY_LIMIT_MB."""
    available = int(psutil.virtual_memory().available)
    limit = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if limit.isdigit():
        available = min(available, int(limit) * 1024**2)
    return available


def free_vram() -> int | None:
    """Free memory of the first NVIDIA GPU, via nvidia-smi (None when there is none or no tool)."""
    tool = shutil.which("nvidia-smi")
    if not tool:
        return None
    try:
        out = subprocess.run([tool, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        return int(out.split()[0]) * 1024**2
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def check_fits(est: MemoryEstimate, ram: int | None = None, vram: int | None = None, gguf: bool = True) -> None:
    """Raise MemoryRefusal naming the numbers and what to change when `est` does not fit."""
    ram = free_ram() if ram is None else ram
    if est.on_gpu and vram is not None and est.on_gpu > vram * HEADROOM:
        advice = ("offload fewer layers to the GPU (n_gpu_layers), choose a smaller quantization or a "
                  "shorter context" if gguf else "load it in 8-bit or 4-bit, or on the CPU")
        raise MemoryRefusal(f"The model needs about {format_size(est.on_gpu)} of GPU memory but only "
                            f"{format_size(vram)} is free: {advice}.")
    if est.on_cpu > ram * HEADROOM:
        if gguf:
            advice = "choose a smaller quantization (e.g. Q4_K_M), a shorter context (n_ctx)"
        else:
            advice = "load it in 8-bit or 4-bit, use a GGUF quantization of it"
        raise MemoryRefusal(
            f"The model needs about {format_size(est.on_cpu)} of memory (weights {format_size(est.weights)}, "
            f"context cache {format_size(est.kv_cache)}) but only {format_size(ram)} is free: "
            f"{advice}, or close other programs.")
