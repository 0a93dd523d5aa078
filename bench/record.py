"""What a benchmark run records so that anyone can reproduce it (summary.json's `record`).

Mode, prompt style and template, whether a chat template was applied, sampling
and seed, batch size, the dataset's path and sha256, the model's path and size,
the adapter, app and library versions, times and host. Versions are read from
package metadata, so nothing heavy is imported for them.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from pathlib import Path
from typing import Any

LIBRARIES = {"transformers": "transformers", "torch": "torch", "llama_cpp_python": "llama-cpp-python",
             "peft": "peft", "bitsandbytes": "bitsandbytes", "accelerate": "accelerate"}


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, dist in LIBRARIES.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = None
    return out


def path_size(path: str | Path) -> int | None:
    """Bytes of a file, or of all files in a folder (a Hugging Face model)."""
    p = Path(path).expanduser()
    try:
        if p.is_file():
            return p.stat().st_size
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    except OSError:
        return None
    return None


def host_info() -> dict[str, Any]:
    return {"name": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "machine": platform.machine()}


def build_record(config: Any, dataset: Any, *, loaded: Any = None, template: str = "", chat_fallback: str | None = None,
                 started_at: str = "", sessions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The reproducibility record of a run (config: BenchConfig; dataset: LoadedDataset; loaded: LoadedModel)."""
    from medalpaca_desktop import __version__

    generate = config.mode == "generate"
    return {
        "mode": config.mode,
        "prompt_style": config.prompt_style,
        "template": template or config.prompt_style,
        "chat_template_applied": bool(config.apply_chat_template),
        "chat_template_fallback": chat_fallback,
        "sampling": config.sampling() if generate else None,
        "seed": config.seed,
        "batch_size": config.batch_size if not generate else 1,
        "rule": config.rule,
        "task": config.task or None,
        "dataset_kind": getattr(dataset, "kind", config.dataset),
        "dataset_path": str(Path(config.data_path()).expanduser().resolve()),
        "dataset_source": getattr(dataset, "source", None) or None,
        "dataset_sha256": getattr(dataset, "sha256", ""),
        "dataset_counts": dataset.counts() if dataset is not None else {},
        "excluded_counts": dataset.excluded_counts() if dataset is not None else {},
        "exclusion_source": getattr(dataset, "exclusion_source", "") or None,
        "skipped_records": len(getattr(dataset, "problems", []) or []),
        "limit": config.limit,
        "model_path": str(Path(config.model).expanduser().resolve()),
        "model_size_bytes": path_size(config.model),
        "adapter": str(Path(config.adapter).expanduser().resolve()) if config.adapter else None,
        "backend": getattr(loaded, "backend", None) or config.resolved_backend(),
        "quantization": getattr(loaded, "quantization", None) or (config.quantization
                                                                   if config.quantization != "none" else None),
        "device": getattr(loaded, "device", None),
        "context_length": getattr(loaded, "context_length", None),
        "app_version": __version__,
        "library_versions": library_versions(),
        "started_at": started_at,
        "finished_at": None,
        "sessions": list(sessions or []),
        "host": host_info(),
    }
