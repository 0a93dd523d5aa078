"""Where the app keeps its data, config and cache: platformdirs, owner-only.

`MEDALPACA_DESKTOP_HOME` moves all three under one folder (tests point it at a
tmp dir so they never touch the user's real folders; a portable install can too).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import platformdirs

APP_NAME = "medalpaca-desktop"
HOME_ENV = "MEDALPACA_DESKTOP_HOME"


def _ensure_private(path: Path) -> Path:
    """Create `path` (and parents) and make it readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(path, 0o700)
    except OSError:  # a folder we do not own (read-only mount): use it as it is
        pass
    return path


def _base(kind: str) -> Path:
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override) / kind
    if kind == "data":
        return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    if kind == "config":
        return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """Database, run directories, exports. Private: chats may hold patient data."""
    return _ensure_private(_base("data"))


def config_dir() -> Path:
    """settings.yaml (model folders, safety switches)."""
    return _ensure_private(_base("config"))


def cache_dir() -> Path:
    """Re-creatable files: de-quantized models, inspection caches."""
    return _ensure_private(_base("cache"))


def database_path() -> Path:
    return data_dir() / "medalpaca.sqlite3"


def runs_dir() -> Path:
    """One sub-folder per training or evaluation job."""
    return _ensure_private(data_dir() / "runs")


def exports_dir() -> Path:
    return _ensure_private(data_dir() / "exports")


def logs_dir() -> Path:
    """Logs of jobs started at a terminal: where a traceback goes instead of the person's screen."""
    return _ensure_private(data_dir() / "logs")


def free_space(folder: Path) -> int | None:
    """Free bytes on the disk that holds `folder` (or would: its nearest existing parent); None if unknown."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None
