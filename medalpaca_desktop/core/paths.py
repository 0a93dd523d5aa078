"""Where the app keeps its data, config and cache: platformdirs, owner-only.

`MEDALPACA_DESKTOP_HOME` moves all three under one folder (tests point it at a
tmp dir so they never touch the user's real folders; a portable install can too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import platformdirs

APP_NAME = "medalpaca-desktop"
HOME_ENV = "MEDALPACA_DESKTOP_HOME"


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it readable by its owner only (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    try:
        os.chmod(path, PRIVATE_DIR_MODE)
    except OSError:  # a folder we do not own (read-only mount): use it as it is
        pass
    return path



def private_file(path: Path, create: bool = True) -> Path:
    """Make `path` owner-only (0600), creating it empty first when missing and `create`.

    Created with that mode (never briefly world-readable); an existing file,
    say from an older version, is narrowed. A file we cannot change is left as it is.

    An existing file is never opened: closing any descriptor of a file drops every POSIX lock this
    process holds on it, and an SQLite database open in this process (the GUI opens several stores)
    would then be written by another process while this one thinks it holds the lock.
    """
    try:
        if create and not path.exists():
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
        os.chmod(path, PRIVATE_FILE_MODE)
    except FileExistsError:  # made by another process just now
        try:
            os.chmod(path, PRIVATE_FILE_MODE)
        except OSError:
            pass
    except OSError:  # missing (create=False), read-only, or not ours
        pass
    return path


def write_private_text(path: Path, text: str) -> Path:
    """Write `text` to `path` (UTF-8) as an owner-only file: exports of chats may hold patient data."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        with contextlib.suppress(OSError):  # an existing file keeps its mode on open: narrow it
            os.chmod(path, PRIVATE_FILE_MODE)
        fh.write(text)
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
    return private_dir(_base("data"))


def config_dir() -> Path:
    """settings.yaml (model folders, safety switches)."""
    return private_dir(_base("config"))


def cache_dir() -> Path:
    """Re-creatable files: de-quantized models, inspection caches."""
    return private_dir(_base("cache"))


def database_path() -> Path:
    return data_dir() / "medalpaca.sqlite3"


def runs_dir() -> Path:
    """One sub-folder per training or evaluation job."""
    return private_dir(data_dir() / "runs")


def exports_dir() -> Path:
    return private_dir(data_dir() / "exports")


def logs_dir() -> Path:
    """Logs of jobs started at a terminal: where a traceback goes instead of the person's screen."""
    return private_dir(data_dir() / "logs")


def free_space(folder: Path) -> int | None:
    """Free bytes on the disk that holds `folder` (or would: its nearest existing parent); None if unknown."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None
