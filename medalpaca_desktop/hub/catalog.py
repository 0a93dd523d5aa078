"""The short list of models the Download dialog offers (resources/model_catalog.yaml).

Presets are data and one test validates every entry (tests/test_download_catalog.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from medalpaca_desktop.hub import is_valid_repo_id

T = TypeVar("T")

KINDS = ("gguf", "hf")
REQUIRED = ("repo_id", "name", "kind", "include", "size_gb", "license", "medical")
OPTIONAL = ("note",)


class CatalogError(ValueError):
    """model_catalog.yaml does not follow its schema."""


@dataclass(frozen=True)
class CatalogEntry:
    repo_id: str
    name: str
    kind: str
    include: tuple[str, ...]
    size_gb: float
    license: str
    medical: bool
    note: str = ""

    @property
    def size_bytes(self) -> int:
        return int(self.size_gb * 1e9)


def check_fields(raw: Any, where: str, required: Iterable[str], optional: Iterable[str],
                 error: type[Exception]) -> None:
    """A catalog entry is a mapping with every required field and no unknown one."""
    if not isinstance(raw, dict):
        raise error(f"{where}: expected a mapping")
    missing = [k for k in required if k not in raw]
    if missing:
        raise error(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(raw) - set(required) - set(optional))
    if unknown:
        raise error(f"{where}: unknown field(s) {', '.join(unknown)}")


def _entry(index: int, raw: Any) -> CatalogEntry:
    where = f"model_catalog.yaml, models[{index}]"
    check_fields(raw, where, REQUIRED, OPTIONAL, CatalogError)
    repo_id = raw["repo_id"]
    if not isinstance(repo_id, str) or not is_valid_repo_id(repo_id):
        raise CatalogError(f"{where}: repo_id {repo_id!r} is not org/name")
    if raw["kind"] not in KINDS:
        raise CatalogError(f"{where}: kind must be one of {', '.join(KINDS)}")
    include = raw["include"]
    if not isinstance(include, list) or not include or not all(isinstance(p, str) and p for p in include):
        raise CatalogError(f"{where}: include must be a non-empty list of file patterns")
    if raw["kind"] == "gguf" and not any(p.lower().endswith(".gguf") for p in include):
        raise CatalogError(f"{where}: a gguf entry must include a .gguf file")
    size = raw["size_gb"]
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size < 1000:
        raise CatalogError(f"{where}: size_gb must be a number of GB")
    for key in ("name", "license"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise CatalogError(f"{where}: {key} must be a non-empty string")
    if not isinstance(raw["medical"], bool):
        raise CatalogError(f"{where}: medical must be true or false")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise CatalogError(f"{where}: note must be a string")
    return CatalogEntry(repo_id=repo_id, name=raw["name"].strip(), kind=raw["kind"], include=tuple(include),
                        size_gb=float(size), license=raw["license"].strip(), medical=raw["medical"], note=note)


def parse_versioned_list(text: str, filename: str, list_key: str, make_entry: Callable[[int, Any], T],
                         key_of: Callable[[T], str], error: type[Exception]) -> list[T]:
    """A `version: 1` YAML document holding a list of unique entries (the shipped catalogs' shape)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{filename} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get(list_key), list):
        raise error(f"{filename}: expected 'version: 1' and a '{list_key}' list")
    entries = [make_entry(i, raw) for i, raw in enumerate(data[list_key])]
    seen: set[str] = set()
    for entry in entries:
        if key_of(entry) in seen:
            raise error(f"{filename}: {key_of(entry)} is listed twice")
        seen.add(key_of(entry))
    return entries


def parse_catalog(text: str) -> list[CatalogEntry]:
    """Entries of a catalog document; CatalogError for anything off-schema."""
    return parse_versioned_list(text, "model_catalog.yaml", "models", _entry, lambda e: e.repo_id, CatalogError)


def load_catalog() -> list[CatalogEntry]:
    """The shipped catalog."""
    from resources import read_text

    return parse_catalog(read_text("model_catalog.yaml"))
