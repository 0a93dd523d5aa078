"""Where a training run's base model comes from and how saved weights are read back.

Its own module because both the job (trainer/run.py) and the after-training steps
(trainer/after.py) need them, and neither may import the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medalpaca_desktop.core.events import Progress, Warning
from trainer.config import TrainConfig


class UnsafeCheckpointError(Exception):
    """A checkpoint to resume from holds a pickle that is not plain tensors; torch refused to load it."""

    def __init__(self, checkpoint: str | Path) -> None:
        folder = Path(checkpoint)
        super().__init__(
            f"{folder.name} in {folder.parent} holds an optimizer, scheduler or random-state file that is not "
            "plain tensors; it was not loaded, as it could run code. Delete that checkpoint folder to resume "
            "from an earlier one, or start the run again.")


def resolve_base_model(config: TrainConfig, emit: Callable[[Any], None]) -> str:
    """An HF folder as is; a GGUF file de-quantized once into the app cache.

    The base's files are checked first (core.model_check: a broken, truncated or pickle
    model, no tokenizer) and, for an adapter method, the LoRA target modules against the
    model's layer names, so bad input fails in milliseconds with a ModelCheckError.
    """
    from medalpaca_desktop.core.model_check import check_model, check_target_modules

    base = Path(config.base_model).expanduser()
    check_model(base)
    folder = base if base.suffix.lower() != ".gguf" else _dequantized(base, emit)
    if config.is_adapter_method:
        check_target_modules(folder, list(config.lora_target_modules))
    return str(folder)


def _dequantized(base: Path, emit: Callable[[Any], None]) -> Path:
    """The GGUF file de-quantized into the app cache (once per file version)."""
    from medalpaca_desktop.core.paths import cache_dir
    from trainer.gguf_import import dequantize_gguf_to_hf

    st = base.stat()
    key = hashlib.sha256(f"{base.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "dequantized" / f"{base.stem}-{key}"
    emit(Warning(message=f"{base.name} is a quantized GGUF file: it is de-quantized for training, and the "
                         "result's quality is that of the quantized file, not of the original model.",
                 extra={"kind": "gguf_base"}))
    if not (target / "config.json").is_file():
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        emit(Progress(stage="dequantize", message=f"de-quantizing {base.name} into {target}"))
        dequantize_gguf_to_hf(base, tmp, progress=lambda m: emit(Progress(stage="dequantize", message=m)))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def verify_saved(folder: Path, adapter: bool) -> None:
    """Read back what was written: the config and every safetensors header."""
    from safetensors import safe_open

    if adapter:
        from peft import PeftConfig

        PeftConfig.from_pretrained(str(folder))
    else:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise OSError(f"no weights were written to {folder}")
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            if not list(fh.keys()):
                raise OSError(f"{f.name} holds no tensors")


#: Tokenizer files transformers 5 no longer writes on save_pretrained but llama.cpp's converters and
#: the exporter read (the SentencePiece model of LLaMA-2, Mistral, Gemma and Phi-3 tokenizers).
SENTENCEPIECE_FILES = ("tokenizer.model",)


def copy_sentencepiece_files(tokenizer: Any, out_dir: Path) -> None:
    """Put the source's tokenizer.model beside a saved tokenizer that lacks it."""
    source = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    for name in SENTENCEPIECE_FILES:
        if (source / name).is_file() and not (out_dir / name).exists():
            shutil.copy2(source / name, out_dir / name)
