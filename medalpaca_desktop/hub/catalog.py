"""The short list of models the Download dialog offers (resources/model_catalog.yaml).

Presets are data and one test validates every entry (tests/test_download_catalog.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from medalpaca_desktop.hub import is_valid_repo_id

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


def _entry(index: int, raw: Any) -> CatalogEntry:
    where = f"model_catalog.yaml, models[{index}]"
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected a mapping")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise CatalogError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {', '.join(unknown)}")
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


def parse_catalog(text: str) -> list[CatalogEntry]:
    """Entries of a catalog document; CatalogError for anything off-schema."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"model_catalog.yaml is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("models"), list):
        raise CatalogError("model_catalog.yaml: expected 'version: 1' and a 'models' list")
    entries = [_entry(i, raw) for i, raw in enumerate(data["models"])]
    seen: set[str] = set()
    for entry in entries:
        if entry.repo_id in seen:
            raise CatalogError(f"model_catalog.yaml: {entry.repo_id} is listed twice")
        seen.add(entry.repo_id)
    return entries


def load_catalog() -> list[CatalogEntry]:
    """The shipped catalog."""
    from resources import read_text

    return parse_catalog(read_text("model_catalog.yaml"))
