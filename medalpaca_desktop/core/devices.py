"""What compute this machine has, as data the GUI can read without torch.

The probe itself (which imports torch) lives in medalpaca_desktop.inference.devices
and runs as `medalpaca devices --json` in a subprocess.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: CPU flags of native bf16 arithmetic (x86: AVX-512 BF16, AMX), as /proc/cpuinfo names them.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Does this CPU compute in bf16 natively? Then training there is ~1.5x faster in bf16 than in fp32
    (perf/README.md); without it bf16 is emulated and slower. Read from the kernel's flags (Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(BF16_CPU_FLAGS & set(line.partition(":")[2].split()))
    return False


@dataclass
class GpuInfo:
    index: int
    name: str
    memory_total: int  # bytes
    memory_free: int | None = None
    bf16: bool = False
    capability: str = ""


@dataclass
class DeviceReport:
    cpu_cores: int
    cpu_threads: int
    ram_total: int
    ram_available: int
    gpus: list[GpuInfo] = field(default_factory=list)
    torch_version: str | None = None
    cuda_version: str | None = None
    torch_cuda_built: bool = False
    llama_cpp_version: str | None = None
    llama_cpp_gpu_offload: bool | None = None
    cpu_bf16: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceReport:
        gpus = [GpuInfo(**g) for g in data.get("gpus", [])]
        names = {f.name for f in dataclasses.fields(cls)} - {"gpus"}
        return cls(gpus=gpus, **{k: v for k, v in data.items() if k in names})
