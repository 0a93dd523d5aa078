"""Pickle-only checkpoints -> safetensors: `medalpaca convert MODEL_DIR`.

Why: older models (the paper's own MedAlpaca 13B) ship only `pytorch_model-*.bin`,
which the app refuses to load because unpickling can run code. Each shard is read
with `torch.load(weights_only=True)`, which only rebuilds tensors and plain
containers and refuses anything else, so no code in the file runs; the tensors
are written as safetensors shards with their index, beside copies of every other
file (config, tokenizer, generation config). The copy is built in a temporary
folder and renamed into place, so a failure (a refused pickle, a full disk)
leaves nothing half-written. The result loads, trains and scores like any model.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medalpaca_desktop.core.disk_full import DISK_FULL_KIND, disk_full_message, is_disk_full
from medalpaca_desktop.core.events import Done, Error, Progress, Result, Started
from medalpaca_desktop.core.jobs import ExitCode

PICKLE_INDEX = "pytorch_model.bin.index.json"
SAFE_INDEX = "model.safetensors.index.json"
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")


class ConvertError(ValueError):
    """The folder cannot be converted; the message says why, `kind` sorts it."""

    def __init__(self, message: str, kind: str = "bad_input") -> None:
        super().__init__(message)
        self.kind = kind


def pickle_shards(folder: Path) -> list[Path]:
    """The folder's pickle weight shards, in the index's order (or the single pytorch_model.bin)."""
    index = folder / PICKLE_INDEX
    if index.is_file():
        try:
            names = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ConvertError(f"{index} cannot be read ({exc}).") from None
        shards = [folder / name for name in dict.fromkeys(names)]
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise ConvertError(f"{folder.name} is missing {len(missing)} weight shard(s) its index names "
                               f"(first: {missing[0]}); download them again.")
        return shards
    single = folder / "pytorch_model.bin"
    return [single] if single.is_file() else []


def default_out(folder: Path) -> Path:
    return folder.with_name(f"{folder.name}-safetensors")


def _load_shard(path: Path) -> dict[str, Any]:
    import torch

    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # a file from before torch 1.6's zip format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("Unsupported")), lines[-1] if lines else "")[:160]
        raise ConvertError(f"{path.name} cannot be read as tensors only ({detail}): it needs code from the file "
                           "to load, or it is damaged, so it is not converted.", "pickle_refused") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ConvertError(f"{path.name} is not a readable PyTorch weight file ({exc}).", "corrupt") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConvertError(f"{path.name} does not hold a state dict of tensors.", "corrupt")
    return state


def _own_storage(state: dict[str, Any]) -> dict[str, Any]:
    """Contiguous tensors that share no memory (safetensors refuses shared storage, e.g. tied embeddings)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        tensor = tensor.contiguous()
        out[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out


def convert_folder(folder: str | Path, out: str | Path | None = None,
                   progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Write `out` (default: FOLDER-safetensors) with the weights as safetensors; returns it."""
    from safetensors.torch import save_file

    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise ConvertError(f"{folder} is not a Hugging Face model folder (no config.json).")
    shards = pickle_shards(folder)
    if not shards:
        raise ConvertError(f"{folder.name} has no pytorch_model*.bin weights to convert"
                           + (" (it already has safetensors)." if any(folder.glob("*.safetensors")) else "."))
    target = Path(out).expanduser() if out else default_out(folder)
    if target.exists():
        raise ConvertError(f"{target} already exists; remove it or choose another --out.")
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        weight_map: dict[str, str] = {}
        total_size = 0
        for i, shard in enumerate(shards, 1):
            if progress is not None:
                progress(i - 1, len(shards), shard.name)
            state = _own_storage(_load_shard(shard))
            name = "model.safetensors" if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(state, str(tmp / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(state, name))
            total_size += sum(t.numel() * t.element_size() for t in state.values())
            del state
        if len(shards) > 1:
            (tmp / SAFE_INDEX).write_text(json.dumps({"metadata": {"total_size": total_size},
                                                      "weight_map": weight_map}, indent=2), encoding="utf-8")
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix not in WEIGHT_SUFFIXES and path.name != PICKLE_INDEX:
                shutil.copy2(path, tmp / path.name)
        if progress is not None:
            progress(len(shards), len(shards), "done")
        tmp.rename(target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise ConvertError(disk_full_message(target.parent, "the safetensors copy", kept="the original is "
                                                 "untouched", then="convert again"), DISK_FULL_KIND) from None
        raise
    return target


def run_convert_cli(folder: str, out: str | None, jsonl: bool) -> ExitCode:
    """`medalpaca convert`: progress events (jsonl) or a line per shard on stderr; errors are one line, exit 2."""
    from medalpaca_desktop.core.worker import TerminalWriter, Worker, run_worker

    def job(worker: Worker) -> ExitCode:
        events = worker.writer if jsonl else None
        started = time.monotonic()

        def progress(done: int, total: int, name: str) -> None:
            if events is not None:
                events.emit(Progress(stage="convert", current=done, total=total, unit="shards", message=name))
            elif name != "done":
                print(f"Converting {name} ({done + 1}/{total})", file=sys.stderr)

        if events is not None:
            events.emit(Started(job="convert", info={"model": folder, "out": out}))
        try:
            target = convert_folder(folder, out, progress)
        except ConvertError as exc:
            worker.emit(Error(message=str(exc), kind=exc.kind))
            worker.emit(Done(ok=False))
            return ExitCode.FAILED if exc.kind == DISK_FULL_KIND else ExitCode.BAD_INPUT
        data = {"path": str(target), "seconds": round(time.monotonic() - started, 2)}
        if events is not None:
            events.emit(Result(data=data))
            events.emit(Done(ok=True, data=data))
        else:
            print(f"Wrote {target}: load it like any model.")
        return ExitCode.OK

    return run_worker(job, name="convert", writer=None if jsonl else TerminalWriter("medalpaca"), interrupt=True)
