"""The Medical Meadow catalog (resources/medical_meadow.yaml): the paper's training data, by sub-dataset.

Light and Qt-free (the fine-tune wizard imports it) and never imports huggingface_hub:
downloading goes through the worker `medalpaca download --dataset REPO_ID`
(hub/download.py with repo_type="dataset"), which puts the files into
data_dir()/datasets/org--name; from then on they are ordinary local data sources
(`local_files`). Offline, `OFFLINE_MESSAGE` says a download needs a connection.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medalpaca_desktop.hub import dataset_folder, is_valid_repo_id
from medalpaca_desktop.hub.catalog import check_fields, parse_versioned_list

ORIGINS = ("created", "external")
USES = ("train", "test")
REQUIRED = ("key", "name", "origin", "records", "use", "description")
OPTIONAL = ("hf_id", "note")
KEY_RE = re.compile(r"^[a-z0-9_]+$")
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet")
OFFLINE_MESSAGE = ("Downloading a Medical Meadow dataset needs a connection to the Hugging Face hub; "
                   "once downloaded it is an ordinary local data source and works offline.")


class MeadowCatalogError(ValueError):
    """medical_meadow.yaml does not follow its schema."""


@dataclass(frozen=True)
class MeadowDataset:
    key: str
    name: str
    origin: str
    records: int
    use: str
    description: str
    hf_id: str | None = None
    note: str = ""

    @property
    def downloadable(self) -> bool:
        """The paper's repository names a Hugging Face id for it."""
        return self.hf_id is not None

    @property
    def for_training(self) -> bool:
        return self.use == "train"

    def folder(self) -> Path | None:
        """Where `medalpaca download --dataset` puts it (data_dir()/datasets/org--name)."""
        return dataset_folder(self.hf_id) if self.hf_id else None

    def local_files(self) -> list[Path]:
        """Data files already downloaded (empty when not downloaded)."""
        folder = self.folder()
        if folder is None or not folder.is_dir():
            return []
        return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                      and not any(part.startswith(".") for part in p.relative_to(folder).parts))

    def download_command(self) -> list[str]:
        """The worker command that fetches it (run by the GUI as a job, or in a terminal)."""
        if not self.hf_id:
            raise MeadowCatalogError(f"{self.name}: the paper's repository names no Hugging Face id to download")
        return [sys.executable, "-m", "medalpaca_desktop", "download", "--dataset", self.hf_id, "--jsonl"]


def _entry(index: int, raw: Any) -> MeadowDataset:
    where = f"medical_meadow.yaml, datasets[{index}]"
    check_fields(raw, where, REQUIRED, OPTIONAL, MeadowCatalogError)
    key = raw["key"]
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise MeadowCatalogError(f"{where}: key {key!r} must be lower case letters, digits and _")
    for name in ("name", "description"):
        if not isinstance(raw[name], str) or not raw[name].strip():
            raise MeadowCatalogError(f"{where}: {name} must be a non-empty string")
    if raw["origin"] not in ORIGINS:
        raise MeadowCatalogError(f"{where}: origin must be one of {', '.join(ORIGINS)}")
    if raw["use"] not in USES:
        raise MeadowCatalogError(f"{where}: use must be one of {', '.join(USES)}")
    records = raw["records"]
    if isinstance(records, bool) or not isinstance(records, int) or records <= 0:
        raise MeadowCatalogError(f"{where}: records must be a positive whole number")
    hf_id = raw.get("hf_id")
    if hf_id is not None and (not isinstance(hf_id, str) or not is_valid_repo_id(hf_id)):
        raise MeadowCatalogError(f"{where}: hf_id {hf_id!r} is not org/name")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise MeadowCatalogError(f"{where}: note must be a string")
    return MeadowDataset(key=key, name=raw["name"].strip(), origin=raw["origin"], records=records, use=raw["use"],
                         description=raw["description"].strip(), hf_id=hf_id, note=note.strip())


def parse_meadow_catalog(text: str) -> list[MeadowDataset]:
    """Entries of a catalog document; MeadowCatalogError for anything off-schema."""
    return parse_versioned_list(text, "medical_meadow.yaml", "datasets", _entry, lambda e: e.key,
                                MeadowCatalogError)


def load_meadow_catalog() -> list[MeadowDataset]:
    """The shipped catalog."""
    from resources import read_text

    return parse_meadow_catalog(read_text("medical_meadow.yaml"))


def meadow_dataset(key: str) -> MeadowDataset:
    for entry in load_meadow_catalog():
        if entry.key == key:
            return entry
    raise KeyError(f"no Medical Meadow dataset {key!r}")


def training_total(entries: list[MeadowDataset] | None = None) -> int:
    """Records of all training sources (the USMLE test sets excluded)."""
    return sum(e.records for e in (entries if entries is not None else load_meadow_catalog()) if e.for_training)
