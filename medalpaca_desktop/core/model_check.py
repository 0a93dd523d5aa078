"""Checks of a model's files before any heavy work: one sentence and a `kind` for each problem.

`medalpaca models inspect` already tells a broken file in milliseconds (core.models); the jobs
that load weights (chat, fine-tune, benchmark, export) run the same checks first, plus what
loading needs beyond metadata: every safetensors file's byte layout as its header describes
it (a truncated download, a header that lies about sizes), a tokenizer, adapter files, and
LoRA target modules that exist in the model. Torch-free: the GUI, the CLI and every worker
use it before a library is imported, so a broken file never ends in a library's traceback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from medalpaca_desktop.core import hf_meta
from medalpaca_desktop.core.model_info import ModelInfo, ModelInspectError, format_size

#: what to do about a broken download or copy, said once.
FETCH_AGAIN = "download or copy it again"

#: bytes per element of each safetensors dtype (sub-byte and unknown types are not size-checked).
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8, "C64": 8}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "tokenizer.tiktoken")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
ALL_LINEAR = "all-linear"


class ModelCheckError(ValueError):
    """One sentence for a person, and a kind the GUI can act on.

    Kinds: not_found, corrupt, unsupported, pickle_refused, no_tokenizer, bad_adapter, bad_target_modules.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_model(path: str | Path, *, need_tokenizer: bool = True, allow_pickle: bool = False) -> ModelInfo:
    """The model at `path` as `inspect_model` reads it, after everything loading it needs was checked."""
    from medalpaca_desktop.core.models import inspect_model

    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise ModelCheckError(f"{path} does not exist: choose the model's folder or .gguf file again.", "not_found")
    try:
        info = inspect_model(path)
    except ModelInspectError as exc:
        raise ModelCheckError(f"{exc}: {FETCH_AGAIN}, or choose another model.", "corrupt") from None
    if info.kind == "adapter":
        raise ModelCheckError(f"{path} is a LoRA adapter, not a model: choose its base model and give the adapter "
                              "separately.", "unsupported")
    if info.kind != "hf":
        return info
    if info.pickle_weights and not allow_pickle:
        raise pickle_refusal(path)
    if not info.supported:
        raise ModelCheckError(info.note or f"{path}: this architecture is not supported.", "unsupported")
    check_weights(path)
    if need_tokenizer:
        check_tokenizer(path)
    return info


def pickle_refusal(folder: Path) -> ModelCheckError:
    """The one refusal of pickle weights (the chat, training, benchmarks and export all say it so)."""
    return ModelCheckError(
        f"{folder.name} stores its weights as pickle (.bin/.pt/.pth), which can run code when loaded. "
        "Convert it to safetensors with `medalpaca convert FOLDER` (only tensors are read, no code runs), or "
        "allow pickle weights for this model only if you trust its source.",
        "pickle_refused")


def check_weights(folder: Path) -> None:
    """Every safetensors file of a Hugging Face folder is whole (see check_safetensors_layout)."""
    for file in hf_meta.safetensors_files(folder):
        check_safetensors_layout(file)


def check_tokenizer(folder: Path) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelCheckError(f"{folder} has no tokenizer ({', '.join(TOKENIZER_FILES[:2])}): copy the tokenizer "
                              "files of the original model into the folder.", "no_tokenizer")


def check_safetensors_layout(path: Path) -> None:
    """The header's tensors tile the data exactly, as safetensors requires; a file cut short or a header
    that lies about shapes or offsets is caught here, in microseconds, instead of deep inside a load."""
    try:
        header = hf_meta.read_safetensors_header(path)
        with path.open("rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
        size = path.stat().st_size
    except (hf_meta.HFMetaError, OSError) as exc:
        raise ModelCheckError(f"{path.parent}: {exc}: {FETCH_AGAIN}.", "corrupt") from None
    spans: list[tuple[int, int]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        problem = _entry_problem(entry)
        if problem:
            raise ModelCheckError(f"{path} is damaged (tensor {name[:80]}: {problem}): {FETCH_AGAIN}.", "corrupt")
        begin, end = entry["data_offsets"]
        spans.append((begin, end))
    spans.sort()
    position = 0
    for begin, end in spans:
        if begin != position:
            raise ModelCheckError(f"{path} is damaged (its tensors overlap or leave gaps): {FETCH_AGAIN}.", "corrupt")
        position = end
    expected = 8 + length + position
    if size < expected:
        raise ModelCheckError(f"{path} is cut short ({format_size(size)} of the {format_size(expected)} its header "
                              f"describes): {FETCH_AGAIN}.", "corrupt")
    if size > expected:
        raise ModelCheckError(f"{path} is damaged ({format_size(size - expected)} more than its header describes): "
                              f"{FETCH_AGAIN}.", "corrupt")


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "not a tensor entry"
    offsets, shape, dtype = entry.get("data_offsets"), entry.get("shape"), entry.get("dtype")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            or offsets[1] < offsets[0]):
        return "bad data offsets"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        return "bad shape"
    width = DTYPE_BYTES.get(str(dtype))
    if width is not None and math.prod(shape) * width != offsets[1] - offsets[0]:
        return f"{dtype} {shape} needs {math.prod(shape) * width} bytes, the header gives {offsets[1] - offsets[0]}"
    return None


# ------------------------------------------------------------------ adapters and target modules


def check_adapter(path: str | Path) -> dict[str, Any]:
    """The adapter's config, once its config and weights are there and readable."""
    path = Path(path).expanduser()
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise ModelCheckError(f"{path} is not a LoRA adapter (no adapter_config.json): choose the adapter's folder.",
                              "bad_adapter")
    try:
        config = hf_meta.read_json(config_path)
    except hf_meta.HFMetaError as exc:
        raise ModelCheckError(f"{path}: {exc}: {FETCH_AGAIN}.", "bad_adapter") from None
    if not isinstance(config, dict):
        raise ModelCheckError(f"{config_path} is not an adapter config: {FETCH_AGAIN}.", "bad_adapter")
    weights = [path / name for name in ADAPTER_WEIGHTS if (path / name).is_file()]
    if not weights:
        raise ModelCheckError(f"{path} has no adapter weights ({ADAPTER_WEIGHTS[0]}): {FETCH_AGAIN}.", "bad_adapter")
    if weights[0].suffix == ".safetensors":
        check_safetensors_layout(weights[0])
    else:
        raise pickle_refusal(path)
    return config


def weight_shapes(folder: str | Path) -> dict[str, list[int]]:
    """Every weight tensor's name and shape, from the safetensors headers (no tensor is read)."""
    shapes: dict[str, list[int]] = {}
    for file in hf_meta.counted_safetensors(Path(folder)):
        for name, entry in hf_meta.read_safetensors_header(file).items():
            if name != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("shape"), list):
                shapes[name] = entry["shape"]
    return shapes


def check_target_modules(folder: str | Path, targets: list[str]) -> None:
    """Every LoRA target names a module of the model the way peft matches a list of names (the whole
    name, or its last dotted parts); the message lists the model's linear layers to choose from."""
    if ALL_LINEAR in targets:
        return
    try:
        shapes = weight_shapes(folder)
    except hf_meta.HFMetaError:
        return  # check_model reports a broken header
    modules = {name.rsplit(".", 1)[0] for name in shapes if "." in name}
    if not modules:
        return  # no safetensors to read the names from
    missing = [t for t in targets if not any(_matches(m, t) for m in modules)]
    if missing:
        linear = sorted({name.rsplit(".", 2)[-2] for name, shape in shapes.items()
                         if name.endswith(".weight") and len(shape) == 2 and name.count(".") >= 2})
        raise ModelCheckError(
            f"lora_target_modules: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not a layer of "
            f"{folder}; its linear layers are {', '.join(linear[:12])}{' …' if len(linear) > 12 else ''} "
            "(or use all-linear).", "bad_target_modules")


#: Separate attention projections (the default LoRA targets) → the fused layer some families have instead
#: (Phi-3: one qkv_proj per layer).
FUSED_EQUIVALENTS: dict[tuple[str, ...], list[str]] = {("q_proj", "v_proj"): ["qkv_proj"]}


def fitting_targets(folder: str | Path, targets: list[str]) -> list[str]:
    """`targets`, or the model's fused equivalent when they name layers it does not have (the wizard
    moves Phi-3's default from q_proj/v_proj to qkv_proj, so choosing the model is enough)."""
    try:
        check_target_modules(folder, targets)
        return targets
    except ModelCheckError:
        pass
    fused = FUSED_EQUIVALENTS.get(tuple(targets))
    if fused is None:
        return targets
    try:
        check_target_modules(folder, fused)
    except ModelCheckError:
        return targets
    return list(fused)


def _matches(module: str, target: str) -> bool:
    """peft's rule for a list of names: the module's name is the target or ends with '.' + target."""
    return module == target or module.endswith("." + target)
