"""Find and describe local models without loading their weights.

`inspect_model` reads one HF folder, LoRA adapter folder or GGUF file;
`discover_models` lists the demo model, the user's folders, the Hugging Face
cache and other desktop apps' GGUF folders. Both read only small JSON files and
file headers (never weights), so a folder of 70B models lists in well under a
second. No torch / transformers / llama_cpp here, not even lazily: the GUI imports
this module and import-linter checks it never reaches them.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medalpaca_desktop.core import gguf_meta, hf_meta
from medalpaca_desktop.core.demo_model import DEMO_FILE, DEMO_NAME, demo_model_path
from medalpaca_desktop.core.model_info import DEMO_MODEL_NOTE, DiscoveryProblem, ModelInfo, ModelInspectError

log = logging.getLogger(__name__)

#: Architectures the whole loop handles (HF loaders, trainer, exporter, llama.cpp): HF model_type and
#: GGUF general.architecture names. The exporter's table is trainer/_gguf_tensors.py ARCHITECTURES.
SUPPORTED_FAMILIES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma2", "gemma3", "gemma3_text",
                                "phi3"})
SUPPORTED_LABEL = "LLaMA 1-3, Mistral, Qwen2/2.5/3, Gemma 2/3, Phi-3"
USER_FOLDER_DEPTH = 4  # folder/org/model/<files>: deep enough, cheap on a home folder
APP_FOLDER_DEPTH = 5  # LM Studio: models/publisher/repo/file.gguf
SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages"})

PICKLE_NOTE = "Pickle weights (.bin/.pt/.pth): not loaded unless allowed in Settings."
NO_WEIGHTS_NOTE = "No weight files found (incomplete download?)."


# ================================================================ inspect

def _error(path: Path, reason: str) -> ModelInspectError:
    """A one-line error; `.reason` keeps the text without the path for problem lists."""
    reason = " ".join(str(reason).split())
    return ModelInspectError(f"{path}: {reason}", reason)


def inspect_model(path: Path | str) -> ModelInfo:
    """Metadata of an HF folder, adapter folder or GGUF file; ModelInspectError otherwise."""
    path = Path(path).expanduser().absolute()
    try:
        if path.is_file():
            return _inspect_file(path)
        if path.is_dir():
            return _inspect_folder(path)
    except ModelInspectError:
        raise
    except (gguf_meta.GGUFFormatError, hf_meta.HFMetaError) as exc:
        raise _error(path, str(exc)) from None
    except OSError as exc:
        raise _error(path, f"cannot read ({exc.strerror or exc})") from None
    except (ValueError, TypeError, KeyError, IndexError, struct.error) as exc:  # odd values in metadata
        raise _error(path, f"unreadable model metadata ({type(exc).__name__}: {exc})") from None
    if path.is_symlink() and not path.exists():
        raise _error(path, "a broken link")
    if path.exists():
        raise _error(path, "not a regular file or folder")
    raise _error(path, "no such file or folder")


def _inspect_file(path: Path) -> ModelInfo:
    if path.suffix.lower() == ".gguf" or gguf_meta.has_gguf_magic(path):
        return _label_if_demo(_inspect_gguf(path))
    if path.suffix.lower() in (".safetensors", *hf_meta.PICKLE_SUFFIXES):
        raise _error(path, "a single weights file: choose the folder that holds it and its config.json")
    raise _error(path, "not a model: expected a .gguf file or a model folder")


def _inspect_folder(folder: Path) -> ModelInfo:
    if (folder / "adapter_config.json").is_file():
        return _inspect_adapter(folder)
    config_path = folder / "config.json"
    if config_path.is_file():
        config = hf_meta.read_json(config_path)
        if hf_meta.looks_like_model_config(config):
            return _inspect_hf(folder, config)
        raise _error(folder, "config.json has no model_type or architectures: not a Hugging Face model")
    if any(p.suffix.lower() == ".gguf" for p in folder.iterdir()):
        raise _error(folder, "a folder of GGUF files: choose one .gguf file, or add the folder to your model folders")
    raise _error(folder, "not a model folder (no config.json or adapter_config.json)")


def _label_if_demo(info: ModelInfo) -> ModelInfo:
    """The bundled demo keeps its label however it is reached (inspect, a user folder)."""
    if Path(info.path).name != DEMO_FILE:
        return info
    demo = demo_model_path()
    if demo is not None and _key(demo) == _key(Path(info.path)):
        info.name, info.source, info.note = DEMO_NAME, "demo", DEMO_MODEL_NOTE
    return info


def demo_model_info() -> ModelInfo | None:
    """The shipped demo's inspected metadata, labelled as the demo; None when the wheel is missing.

    Raises ModelInspectError when the file exists but cannot be read (a broken
    install), so discovery can report it instead of silently hiding the demo.
    """
    path = demo_model_path()
    if path is None:
        return None
    info = inspect_model(path)
    info.name, info.source, info.note = DEMO_NAME, "demo", DEMO_MODEL_NOTE
    return info


# ---------------------------------------------------------------- HF folders

def _display_name(folder: Path) -> str:
    """'org/name' for an HF cache snapshot (…/models--org--name/snapshots/<rev>), else the folder name."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return hf_repo_name(folder.parent.parent.name)
    return folder.name


def hf_repo_name(cache_dir_name: str) -> str:
    """'models--org--name' -> 'org/name' (the hub's own escaping, reversed)."""
    return cache_dir_name.removeprefix("models--").replace("--", "/", 1)


def _support(model_type: str | None) -> tuple[bool, str]:
    if model_type and model_type.lower() in SUPPORTED_FAMILIES:
        return True, ""
    label = model_type or "unknown"
    return False, f"Architecture '{label}' is not one the app's engines handle ({SUPPORTED_LABEL})."


def _inspect_hf(folder: Path, config: dict[str, Any]) -> ModelInfo:
    model_type = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    dtype = hf_meta.config_dtype(config)
    fmt = hf_meta.weight_format(folder)
    quant = hf_meta.quantization_method(config)
    params, estimated = hf_meta.parameter_count(folder, dtype)
    supported, support_note = _support(model_type)
    notes = [support_note]
    if fmt == "pickle":
        notes.append(PICKLE_NOTE)
    elif fmt == "none":
        notes.append(NO_WEIGHTS_NOTE)
    extra = {k: config[k] for k in ("num_hidden_layers", "hidden_size", "vocab_size") if isinstance(config.get(k), int)}
    extra["parameters_estimated"] = estimated or bool(quant and params)
    return ModelInfo(
        path=str(folder),
        name=_display_name(folder),
        kind="hf",
        weight_format=fmt,
        architecture=hf_meta.architecture(config),
        model_type=model_type,
        parameters=params,
        dtype=dtype,
        quantization=quant,
        context_length=hf_meta.context_length(config),
        chat_template=hf_meta.chat_template(folder),
        size_bytes=hf_meta.folder_size(folder),
        pickle_weights=fmt == "pickle",
        loadable_by_default=fmt == "safetensors",
        supported=supported,
        note=" ".join(n for n in notes if n),
        extra=extra,
    )


# ---------------------------------------------------------------- adapters

def _inspect_adapter(folder: Path) -> ModelInfo:
    cfg = hf_meta.read_json(folder / "adapter_config.json")
    fmt = hf_meta.weight_format(folder)
    files = hf_meta.safetensors_files(folder)
    params = hf_meta.safetensors_stats(files)[0] if files else None
    targets = cfg.get("target_modules")
    extra = {
        "r": cfg.get("r"),
        "alpha": cfg.get("lora_alpha"),
        "dropout": cfg.get("lora_dropout"),
        "targets": sorted(targets) if isinstance(targets, list) else targets,
        "task_type": cfg.get("task_type"),
    }
    notes = [PICKLE_NOTE if fmt == "pickle" else "", NO_WEIGHTS_NOTE if fmt == "none" else ""]
    base = cfg.get("base_model_name_or_path")
    return ModelInfo(
        path=str(folder),
        name=_display_name(folder),
        kind="adapter",
        weight_format=fmt,
        parameters=params,
        chat_template=hf_meta.chat_template(folder),
        size_bytes=hf_meta.folder_size(folder),
        base_model=str(base) if base else None,
        adapter_type=str(cfg.get("peft_type")) if cfg.get("peft_type") else None,
        pickle_weights=fmt == "pickle",
        loadable_by_default=fmt == "safetensors",
        note=" ".join(n for n in notes if n),
        extra={k: v for k, v in extra.items() if v is not None},
    )


# ---------------------------------------------------------------- GGUF files

def _gguf_stem(path: Path) -> str:
    match = gguf_meta.SPLIT_RE.match(path.name)
    if match:
        return match["prefix"]
    return path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name


def _first_split_part(path: Path) -> Path:
    """Part 1 of a split model holds the metadata; inspecting part 3 means the whole model."""
    parts = gguf_meta.split_parts(path)
    if parts and parts[0] != 1:
        siblings = gguf_meta.split_siblings(path)
        if siblings and gguf_meta.split_parts(siblings[0]) == (1, parts[1]):
            return siblings[0]
    return path


def _inspect_gguf(path: Path) -> ModelInfo:
    path = _first_split_part(path)
    header = gguf_meta.read_gguf_header(path)
    params, size, notes = header.parameter_count, path.stat().st_size, []
    split = gguf_meta.split_parts(path)
    if split:
        siblings = gguf_meta.split_siblings(path)
        for part in siblings[1:]:
            params += gguf_meta.read_gguf_header(part).parameter_count
            size += part.stat().st_size
        if len(siblings) < split[1]:
            notes.append(f"Only {len(siblings)} of {split[1]} parts are present.")
    arch = header.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    supported, support_note = _support(arch)
    template = header.get("tokenizer.chat_template")
    context = header.get(f"{arch}.context_length") if arch else None
    vocab = header.arrays.get("tokenizer.ggml.tokens")
    extra: dict[str, Any] = {
        "general_name": header.get("general.name"),
        "gguf_version": header.version,
        "tensor_count": len(header.tensors),
        "block_count": header.get(f"{arch}.block_count") if arch else None,
        "embedding_length": header.get(f"{arch}.embedding_length") if arch else None,
        "vocab_size": vocab.length if vocab else None,
        "split_parts": split[1] if split else None,
    }
    return ModelInfo(
        path=str(path),
        name=_gguf_stem(path),
        kind="gguf",
        weight_format="gguf",
        architecture=arch,
        model_type=arch,
        parameters=params,
        quantization=gguf_meta.file_type_name(header),
        context_length=context if isinstance(context, int) else None,
        chat_template=template if isinstance(template, str) and template else None,
        size_bytes=size,
        supported=supported,
        note=" ".join([support_note, *notes]).strip(),
        extra={k: v for k, v in extra.items() if v is not None},
    )


# ================================================================ discover

@dataclass
class _Found:
    """Models and problems in discovery order, each resolved path once."""

    models: list[ModelInfo] = field(default_factory=list)
    problems: list[DiscoveryProblem] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def claim(self, path: Path) -> bool:
        """True the first time a (resolved) path is seen."""
        key = _key(path)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def problem(self, path: Path | str, message: str) -> None:
        self.problems.append(DiscoveryProblem(str(path), message))

    def add(self, path: Path, source: str, name: str | None = None, extra: dict[str, Any] | None = None) -> None:
        if not self.claim(path):
            return
        try:
            info = inspect_model(path)
        except ModelInspectError as exc:
            self.problem(path, exc.reason)
            return
        except Exception as exc:
            log.exception("inspecting %s failed", path)
            self.problem(path, f"unexpected error: {type(exc).__name__}: {exc}")
            return
        if not info.is_demo:
            info.source = source
            if name:
                info.name = name
        info.extra.update(extra or {})
        # A split model's later part resolves to part 1: list that once.
        if _key(Path(info.path)) == _key(path) or self.claim(Path(info.path)):
            self.models.append(info)


def _key(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a link loop
        return str(path.absolute())


def discover_models(
    folders: list[Path],
    scan_hf_cache: bool = True,
    scan_other_apps: bool = True,
) -> tuple[list[ModelInfo], list[DiscoveryProblem]]:
    """The demo model, then the user's folders, the HF cache and other apps' GGUF files.

    Never raises for a bad file or folder: those become DiscoveryProblems.
    """
    found = _Found()
    _add_demo(found)
    for folder in folders:
        _scan_user_folder(found, Path(folder).expanduser())
    if scan_hf_cache:
        _scan_hf_cache(found, hf_hub_cache())
    if scan_other_apps:
        for app, folder in other_app_model_folders():
            if folder.is_dir():
                _scan_tree(found, folder, app, depth=APP_FOLDER_DEPTH, gguf_only=True)
        _scan_ollama(found, ollama_models_dir())
    return found.models, found.problems


def _add_demo(found: _Found) -> None:
    try:
        info = demo_model_info()
    except ModelInspectError as exc:  # installed but unreadable: say so, do not hide it
        found.problem(demo_model_path() or "demo model", exc.reason)
        return
    if info is not None and found.claim(Path(info.path)):
        found.models.append(info)


def _scan_user_folder(found: _Found, folder: Path) -> None:
    if folder.is_file():
        found.add(folder, "folder")
    elif folder.is_dir():
        _scan_tree(found, folder, "folder", depth=USER_FOLDER_DEPTH, gguf_only=False)
    else:
        found.problem(folder, "folder not found")


def _scan_tree(found: _Found, root: Path, source: str, depth: int, gguf_only: bool) -> None:
    for path in _walk(found, root, depth, gguf_only):
        found.add(path, source)


def _walk(found: _Found, root: Path, depth: int, gguf_only: bool) -> Iterator[Path]:
    """GGUF files (first part of a split only) and model folders under `root`.

    Hidden folders are skipped, a model folder is not searched further (its
    checkpoints are not separate models) and each real folder is visited once.
    """
    stack: list[tuple[Path, int]] = [(root, 0)]
    visited: set[str] = set()
    while stack:
        folder, level = stack.pop()
        try:
            key = str(folder.resolve())
            if key in visited:
                continue
            visited.add(key)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            found.problem(folder, f"cannot list folder ({exc.strerror or exc})")
            continue
        is_model_dir = not gguf_only and _is_model_dir(folder)
        if is_model_dir:
            yield folder
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if _is_gguf_entry(entry):
                yield Path(entry.path)
            elif not is_model_dir and level < depth and entry.name not in SKIP_DIRS and _is_dir(entry):
                subdirs.append((Path(entry.path), level + 1))
        stack.extend(reversed(subdirs))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_gguf_entry(entry: os.DirEntry) -> bool:
    if not entry.name.lower().endswith(".gguf"):
        return False
    try:
        if not entry.is_file():
            return False
    except OSError:
        return False
    parts = gguf_meta.split_parts(Path(entry.name))
    return parts is None or parts[0] == 1


def _is_model_dir(folder: Path) -> bool:
    """An adapter folder, or a folder whose config.json is a transformers config."""
    if (folder / "adapter_config.json").is_file():
        return True
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        return hf_meta.looks_like_model_config(hf_meta.read_json(config))
    except hf_meta.HFMetaError:  # broken JSON: a model folder only if weights sit beside it
        return hf_meta.weight_format(folder) != "none"


# ---------------------------------------------------------------- HF cache

def hf_hub_cache() -> Path:
    """Where huggingface_hub keeps downloads, by the same environment variables it reads."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _current_snapshot(repo: Path) -> Path | None:
    """The revision refs/main points at, else the most recently written snapshot."""
    snapshots = repo / "snapshots"
    try:
        ref = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
        if ref and (snapshots / ref).is_dir():
            return snapshots / ref
    except OSError:
        pass
    try:
        revs = [p for p in snapshots.iterdir() if p.is_dir()]
    except OSError:
        return None
    return max(revs, key=lambda p: p.stat().st_mtime) if revs else None


def _scan_hf_cache(found: _Found, cache: Path) -> None:
    try:
        repos = sorted(p for p in cache.iterdir() if p.name.startswith("models--") and p.is_dir())
    except OSError:
        return  # no cache yet: nothing to list, nothing to report
    for repo in repos:
        snapshot = _current_snapshot(repo)
        if snapshot is None:
            continue
        name = hf_repo_name(repo.name)
        for path in _walk(found, snapshot, depth=2, gguf_only=False):
            found.add(path, "hf-cache", name=name if path == snapshot else None, extra={"hf_repo": name})


# ---------------------------------------------------------------- other apps

def _env_dir(var: str, *parts: str) -> list[Path]:
    value = os.environ.get(var)
    return [Path(value, *parts)] if value else []


def other_app_model_folders() -> list[tuple[str, Path]]:
    """(app name, folder) for the model folders of other local-LLM desktop apps.

    Built from Path.home() each call, so tests (and portable homes) can move HOME.
    """
    home = Path.home()
    xdg_data = Path(os.environ["XDG_DATA_HOME"]) if os.environ.get("XDG_DATA_HOME") else home / ".local" / "share"
    mac_support = home / "Library" / "Application Support"
    folders: list[tuple[str, Path]] = [
        ("LM Studio", home / ".lmstudio" / "models"),
        ("LM Studio", home / ".cache" / "lm-studio" / "models"),
        ("GPT4All", xdg_data / "nomic.ai" / "GPT4All"),
        ("GPT4All", mac_support / "nomic.ai" / "GPT4All"),
        *[("GPT4All", p) for p in _env_dir("LOCALAPPDATA", "nomic.ai", "GPT4All")],
        ("Jan", home / "jan" / "models"),
        ("Jan", xdg_data / "Jan" / "data" / "models"),
        ("Jan", mac_support / "Jan" / "data" / "models"),
        *[("Jan", p) for p in _env_dir("APPDATA", "Jan", "data", "models")],
        ("text-generation-webui", home / "text-generation-webui" / "models"),
    ]
    return folders


def ollama_models_dir() -> Path:
    value = os.environ.get("OLLAMA_MODELS")
    return Path(value).expanduser() if value else Path.home() / ".ollama" / "models"


def _scan_ollama(found: _Found, root: Path) -> None:
    """Ollama stores GGUF blobs by digest; its manifests name them 'model:tag'."""
    manifests = root / "manifests"
    if not manifests.is_dir():
        return
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        blob = _ollama_model_blob(root, manifest)
        if blob is None:
            continue
        rel = manifest.relative_to(manifests).parts  # registry/namespace/model/tag
        model, tag = (rel[-2], rel[-1]) if len(rel) >= 2 else (rel[-1], "latest")
        namespace = rel[-3] if len(rel) >= 3 and rel[-3] != "library" else ""
        name = f"{namespace + '/' if namespace else ''}{model}:{tag}"
        found.add(blob, "Ollama", name=name)


def _ollama_model_blob(root: Path, manifest: Path) -> Path | None:
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8")).get("layers", [])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and layer.get("mediaType") == "application/vnd.ollama.image.model":
            blob = root / "blobs" / str(layer.get("digest", "")).replace(":", "-")
            return blob if blob.is_file() else None
    return None
