"""Probe GPUs (torch), CPU and RAM for `medalpaca devices` (a worker-side command)."""

from __future__ import annotations

import os
import platform

import psutil

from medalpaca_desktop.core.devices import DeviceReport, GpuInfo, cpu_native_bf16
from medalpaca_desktop.core.model_info import format_size


def _llama_cpp_facts() -> tuple[str | None, bool | None]:
    try:
        import llama_cpp
    except Exception:  # noqa: BLE001 - a broken native build must not break the probe
        return None, None
    try:
        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:  # noqa: BLE001
        offload = None
    return getattr(llama_cpp, "__version__", None), offload


def probe_devices() -> DeviceReport:
    """What this machine offers for training and inference, with notes for a person."""
    vm = psutil.virtual_memory()
    report = DeviceReport(
        cpu_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        cpu_threads=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_total=int(vm.total),
        ram_available=int(vm.available),
        cpu_bf16=cpu_native_bf16(),
    )
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        report.notes.append(f"PyTorch could not be imported ({exc}); training and HF models are unavailable.")
        torch = None  # type: ignore[assignment]  # "no torch" is a state this report describes
    if torch is not None:
        report.torch_version = torch.__version__
        report.cuda_version = torch.version.cuda
        report.torch_cuda_built = torch.version.cuda is not None
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                try:
                    free, _total = torch.cuda.mem_get_info(index)
                except Exception:  # noqa: BLE001
                    free = None
                report.gpus.append(GpuInfo(
                    index=index, name=props.name, memory_total=int(props.total_memory),
                    memory_free=None if free is None else int(free),
                    bf16=props.major >= 8, capability=f"{props.major}.{props.minor}"))
        elif not report.torch_cuda_built:
            report.notes.append("This PyTorch is a CPU-only build: training and HF models run on the CPU.")
        else:
            report.notes.append("No CUDA GPU found: training and HF models run on the CPU (slower).")
    report.llama_cpp_version, report.llama_cpp_gpu_offload = _llama_cpp_facts()
    if report.llama_cpp_gpu_offload is False and report.gpus:
        report.notes.append("llama-cpp-python was built without GPU offload: GGUF models run on the CPU. "
                            "Reinstall it with CMAKE_ARGS=\"-DGGML_CUDA=on\" to use the GPU.")
    return report


def describe_devices(report: DeviceReport) -> str:
    """The human form of `medalpaca devices`."""
    lines = [
        f"CPU: {report.cpu_cores} cores / {report.cpu_threads} threads ({platform.machine()})"
        + (", native bf16" if report.cpu_bf16 else ""),
        f"RAM: {format_size(report.ram_available)} free of {format_size(report.ram_total)}",
    ]
    if report.gpus:
        for gpu in report.gpus:
            free = f", {format_size(gpu.memory_free)} free" if gpu.memory_free is not None else ""
            lines.append(f"GPU {gpu.index}: {gpu.name}, {format_size(gpu.memory_total)}{free}, "
                         f"compute {gpu.capability}, bf16 {'yes' if gpu.bf16 else 'no'}")
    else:
        lines.append("GPU: none (CUDA)")
    lines.append(f"PyTorch: {report.torch_version or 'not installed'}"
                 + (f" (CUDA {report.cuda_version})" if report.cuda_version else " (CPU build)"))
    offload = {True: "GPU offload", False: "CPU only", None: "unknown"}[report.llama_cpp_gpu_offload]
    lines.append(f"llama-cpp-python: {report.llama_cpp_version or 'not installed'} ({offload})")
    lines.extend(f"Note: {n}" for n in report.notes)
    return "\n".join(lines)
