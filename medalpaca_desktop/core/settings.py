"""App settings shared by the GUI and the CLI (config_dir()/settings.yaml).

Each field's `help` metadata is the settings dialog's tooltip. Window geometry and
other pure-UI preferences live in QSettings instead.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medalpaca_desktop.core import paths


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class AppSettings:
    """What the user chose once and every part of the app respects."""

    model_folders: list[str] = field(
        default_factory=list,
        metadata=_help("Folders searched for models (Hugging Face directories and .gguf files)."),
    )
    scan_hf_cache: bool = field(
        default=True,
        metadata=_help("Also list models already downloaded into the Hugging Face cache."),
    )
    scan_other_apps: bool = field(
        default=True,
        metadata=_help("Also list GGUF files in the model folders of LM Studio, GPT4All, Jan and Ollama-style apps."),
    )
    allow_pickle_weights: bool = field(
        default=False,
        metadata=_help(
            "Allow loading weights stored as pickle (.bin/.pt/.pth). Pickle files can run code when loaded: "
            "only enable for files from a source you trust."
        ),
    )

    @classmethod
    def field_help(cls, name: str) -> str:
        for f in dataclasses.fields(cls):
            if f.name == name:
                return str(f.metadata.get("help", ""))
        raise KeyError(name)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppSettings:
        """Typed values only: a quoted "false" for allow_pickle_weights must not read as a true string."""
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        clean: dict[str, Any] = {}
        for key, value in (data or {}).items():
            if key not in kinds:
                continue
            if kinds[key] in ("bool", bool):
                if not isinstance(value, bool):
                    raise TypeError(f"{key} must be true or false, not {str(value)[:40]!r}")
            elif value is not None and (not isinstance(value, list)
                                        or not all(isinstance(p, (str, int, float)) for p in value)):
                raise TypeError(f"{key} must be a list of folders")
            clean[key] = value
        settings = cls(**clean)
        settings.model_folders = [str(p) for p in settings.model_folders or []]
        return settings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def settings_path() -> Path:
    return paths.config_dir() / "settings.yaml"


class SettingsError(ValueError):
    """settings.yaml exists but cannot be read."""


def load_settings(path: Path | None = None) -> AppSettings:
    """The saved settings, or defaults when none were saved yet."""
    path = path or settings_path()
    if not path.exists():
        return AppSettings()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: expected a mapping at the top level")
        return AppSettings.from_dict(data)
    except (yaml.YAMLError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise SettingsError(f"{path} is not valid settings YAML: {str(exc)[:300]}") from None


def save_settings(settings: AppSettings, path: Path | None = None) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a file."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(settings.to_dict(), fh, sort_keys=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
