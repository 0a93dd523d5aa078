"""Metadata of Hugging Face model and adapter folders, read from small JSON files.

Parameter counts come from safetensors headers (8-byte length + JSON), never from
the tensors themselves, so a 70B folder is inspected as fast as a tiny one and no
pickle file is ever opened.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from medalpaca_desktop.core.records import parse_json

SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024  # the format's own cap on header size
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
# Files a Trainer checkpoint keeps beside the weights: pickles, but not weights.
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state")

DTYPE_BYTES = {
    "float64": 8, "F64": 8, "float32": 4, "F32": 4, "float16": 2, "F16": 2, "bfloat16": 2, "BF16": 2,
    "int8": 1, "I8": 1, "uint8": 1, "U8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


class HFMetaError(ValueError):
    """A JSON file of the folder is missing or not valid (one-line message)."""


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; anything else is an HFMetaError naming the file."""
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HFMetaError(f"{path.name} is not readable JSON ({_first_line(exc)})") from None
    if not isinstance(data, dict):
        raise HFMetaError(f"{path.name} is not a JSON object")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def looks_like_model_config(config: dict[str, Any]) -> bool:
    """True for a transformers config.json (not just any app's config.json)."""
    return bool(config.get("model_type") or config.get("architectures"))


# ---------------------------------------------------------------- weight files

def safetensors_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.safetensors") if p.is_file())


def pickle_weight_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES and not p.name.startswith(NOT_WEIGHTS)
    )


def weight_format(folder: Path) -> str:
    """'safetensors' when any exist (transformers prefers them), else 'pickle', else 'none'."""
    if safetensors_files(folder):
        return "safetensors"
    if pickle_weight_files(folder):
        return "pickle"
    return "none"


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of one .safetensors file (tensor names -> dtype, shape, offsets)."""
    with open(path, "rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) < 8:
            raise HFMetaError(f"{path.name} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw_len)
        if length > SAFETENSORS_HEADER_LIMIT:
            raise HFMetaError(f"{path.name} is not a valid safetensors file (header size {length})")
        raw = fh.read(length)
    if len(raw) < length:
        raise HFMetaError(f"{path.name} is truncated (its header is cut short)")
    try:
        header = parse_json(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HFMetaError(f"{path.name} is not a valid safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise HFMetaError(f"{path.name} is not a valid safetensors file (bad header)")
    return header


def safetensors_stats(files: list[Path]) -> tuple[int, dict[str, int]]:
    """(element count, elements per dtype) over the headers of `files`."""
    total = 0
    per_dtype: dict[str, int] = {}
    for path in files:
        for name, entry in read_safetensors_header(path).items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            count = 1
            for dim in entry.get("shape", []):
                count *= int(dim)
            total += count
            dtype = str(entry.get("dtype", "?"))
            per_dtype[dtype] = per_dtype.get(dtype, 0) + count
    return total, per_dtype


def counted_safetensors(folder: Path) -> list[Path]:
    """The safetensors files that make up the model, each tensor once.

    The shard index names them when there is one; Mistral-style repos also ship a
    `consolidated.safetensors` copy of the same weights, which is left out.
    """
    files = safetensors_files(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = read_json(index).get("weight_map")
        except HFMetaError:
            weight_map = None
        if isinstance(weight_map, dict) and weight_map:
            listed = {str(v) for v in weight_map.values()}
            chosen = [p for p in files if p.name in listed]
            if chosen:
                return chosen
    others = [p for p in files if not p.name.startswith("consolidated")]
    return others or files


def parameter_count(folder: Path, dtype: str | None) -> tuple[int | None, bool]:
    """(count, estimated): exact from safetensors headers, else estimated from sizes.

    Quantized (bitsandbytes / GPTQ) checkpoints store packed integers, so their
    header count is below the model's real size; callers mark those estimated.
    """
    files = counted_safetensors(folder)
    if files:
        return safetensors_stats(files)[0], False
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        index = folder / "pytorch_model.bin.index.json"
    if index.is_file():
        meta = read_json(index).get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        if isinstance(meta.get("total_parameters"), int):
            return meta["total_parameters"], False
        if isinstance(meta.get("total_size"), int) and dtype in DTYPE_BYTES:
            return meta["total_size"] // DTYPE_BYTES[dtype], True
    pickles = pickle_weight_files(folder)
    if pickles and dtype in DTYPE_BYTES:
        return sum(p.stat().st_size for p in pickles) // DTYPE_BYTES[dtype], True
    return None, False


# ---------------------------------------------------------------- config facts

def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """Multimodal configs keep the language model's facts under text_config."""
    nested = config.get("text_config")
    return nested if isinstance(nested, dict) else {}


def config_dtype(config: dict[str, Any]) -> str | None:
    for source in (config, _text_config(config)):
        value = source.get("dtype") or source.get("torch_dtype")
        if isinstance(value, str):
            return value.removeprefix("torch.")
    return None


def context_length(config: dict[str, Any]) -> int | None:
    for source in (config, _text_config(config)):
        for key in CONTEXT_KEYS:
            value = source.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


def quantization_method(config: dict[str, Any]) -> str | None:
    """'bitsandbytes 4-bit', 'bitsandbytes 8-bit', 'gptq 4-bit', 'awq', ..."""
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method") or "unknown")
    if method == "bitsandbytes":
        if qc.get("load_in_4bit"):
            kind = qc.get("bnb_4bit_quant_type")
            return f"bitsandbytes 4-bit ({kind})" if kind else "bitsandbytes 4-bit"
        if qc.get("load_in_8bit"):
            return "bitsandbytes 8-bit"
    bits = qc.get("bits")
    return f"{method} {bits}-bit" if isinstance(bits, int) else method


def architecture(config: dict[str, Any]) -> str | None:
    archs = config.get("architectures")
    if isinstance(archs, list) and archs:
        return str(archs[0])
    return None


# ---------------------------------------------------------------- chat template

def chat_template(folder: Path) -> str | None:
    """The model's own chat template: chat_template.jinja, .json, or tokenizer_config.json."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8") or None
        except (OSError, UnicodeDecodeError):
            return None
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            try:
                template = _pick_template(read_json(path).get("chat_template"))
            except HFMetaError:
                continue
            if template:
                return template
    return None


def _pick_template(value: Any) -> str | None:
    """A string, or a list of {name, template} from which 'default' (else the first) wins."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, list):
        named = [v for v in value if isinstance(v, dict) and isinstance(v.get("template"), str)]
        for entry in named:
            if entry.get("name") == "default":
                return entry["template"]
        return named[0]["template"] if named else None
    return None


# ---------------------------------------------------------------- sizes

def folder_size(folder: Path) -> int:
    """Bytes of the files in `folder` (links followed: HF cache snapshots link to blobs)."""
    total = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total
