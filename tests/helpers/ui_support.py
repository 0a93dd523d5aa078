"""Shared bits of the UI tests: a private HOME and a fake devices probe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NO_GPU_REPORT = {
    "cpu_cores": 2, "cpu_threads": 4, "ram_total": 16_000_000_000, "ram_available": 9_000_000_000,
    "gpus": [], "torch_version": "2.4.0+cpu", "cuda_version": None, "torch_cuda_built": False,
    "llama_cpp_version": "0.3.16", "llama_cpp_gpu_offload": False, "notes": ["CPU-only build."],
}
GPU_REPORT = {
    **NO_GPU_REPORT,
    "gpus": [{"index": 0, "name": "NVIDIA RTX A6000", "memory_total": 51_000_000_000,
              "memory_free": 50_000_000_000, "bf16": True, "capability": "8.6"}],
    "cuda_version": "12.4", "torch_cuda_built": True, "notes": [],
}


def fake_probe_command(report: dict | None = None, exit_code: int = 0, stderr: str = "") -> list[str]:
    """A devices command that answers at once, without importing torch."""
    code = (f"import sys; print({json.dumps(json.dumps(report)) if report is not None else repr('')});"
            f" sys.stderr.write({stderr!r}); sys.exit({exit_code})")
    return [sys.executable, "-c", code]


def isolate_user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME -> tmp so other apps' model folders (LM Studio, Ollama...) are never scanned."""
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "OLLAMA_MODELS"):
        monkeypatch.delenv(var, raising=False)
    return home
