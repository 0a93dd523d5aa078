"""Quantize a GGUF file with llama.cpp's own quantizer (through llama-cpp-python).

Why not quantize in Python: llama.cpp's quantizer picks per-tensor types for
the K-quant mixes (q4_k_m keeps some attention/FFN tensors at higher precision,
falls back for rows not divisible by 256) and its block formats are the exact
ones the runtime reads. Re-implementing that would be slower and drift.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

#: Export quant name → name of llama.cpp's LLAMA_FTYPE_* constant.
QUANT_FTYPES: dict[str, str] = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
}

#: Rough bytes per weight of each mix, for the free-space check before starting.
BYTES_PER_WEIGHT: dict[str, float] = {"q8_0": 1.07, "q4_k_m": 0.61, "q5_k_m": 0.70, "q6_k": 0.83}


class QuantizeError(RuntimeError):
    pass


def quantize_file(src: Path, dst: Path, quant: str, threads: int = 0) -> None:
    """Quantize `src` (an f32/f16 GGUF) into `dst`; raises QuantizeError on failure."""
    import llama_cpp
    import llama_cpp._logger  # noqa: F401 - routes llama.cpp's log through the "llama-cpp-python" logger

    ftype = getattr(llama_cpp, QUANT_FTYPES[quant])
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode("utf-8"), str(dst).encode("utf-8"), ctypes.byref(params))
    if rc != 0:
        raise QuantizeError(f"llama.cpp could not quantize the model to {quant} (error code {rc})")
