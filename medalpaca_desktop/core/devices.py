"""What compute this machine has, as data the GUI can read without torch.

The probe itself (which imports torch) lives in medalpaca_desktop.inference.devices
and runs as `medalpaca devices --json` in a subprocess.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


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
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceReport:
        gpus = [GpuInfo(**g) for g in data.get("gpus", [])]
        names = {f.name for f in dataclasses.fields(cls)} - {"gpus"}
        return cls(gpus=gpus, **{k: v for k, v in data.items() if k in names})
