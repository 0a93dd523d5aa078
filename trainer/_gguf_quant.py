"""Quantize a GGUF file with llama.cpp's own quantizer (through llama-cpp-python).

Why not quantize in Python: llama.cpp's quantizer picks per-tensor types for
the K-quant mixes (q4_k_m keeps some attention/FFN tensors at higher precision,
falls back for rows not divisible by 256) and its block formats are the exact
ones the runtime reads. Re-implementing that would be slower and drift.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
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


#: llama.cpp's quantizer logs one "[  12/ 272]  blk.0.attn_q.weight - ..." line per tensor.
_TENSOR_LINE = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")

TensorCallback = Callable[[int, int, str], None]


def quantize_file(src: Path, dst: Path, quant: str, threads: int = 0,
                  on_tensor: TensorCallback | None = None) -> list[str]:
    """Quantize `src` (an f32/f16 GGUF) into `dst`; raises QuantizeError on failure.

    llama.cpp's own log is captured for the call: its per-tensor lines drive
    `on_tensor(done, total, name)` (progress with ETA for a 13B model's minutes of
    work) and its warnings (e.g. K-quant fall-backs for rows not divisible by 256)
    are returned instead of flooding the terminal.
    """
    import llama_cpp
    import llama_cpp._logger as llama_logger  # the callback llama-cpp-python normally installs

    warnings: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        match = _TENSOR_LINE.match(text.lstrip())
        if match and on_tensor is not None:
            on_tensor(int(match.group(1)), int(match.group(2)), match.group(3).decode("utf-8", "replace"))
        elif level in (2, 3):  # GGML_LOG_LEVEL_WARN, _ERROR
            warnings.append(text.decode("utf-8", "replace").strip())

    ftype = getattr(llama_cpp, QUANT_FTYPES[quant])
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode("utf-8"), str(dst).encode("utf-8"), ctypes.byref(params))
    finally:
        llama_cpp.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
    if rc != 0:
        detail = f": {warnings[-1]}" if warnings else ""
        raise QuantizeError(f"llama.cpp could not quantize the model to {quant} (error code {rc}){detail}")
    return warnings
