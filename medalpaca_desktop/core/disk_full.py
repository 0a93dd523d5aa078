"""A full disk, recognised in one place and said the same way everywhere.

The database, a checkpoint save, an export, a benchmark's items and a download all write
files; when the disk fills up each must end with one sentence a person can act on (which
disk, how much is free, what was kept), never with a library's traceback. A full disk
reaches us in several shapes: an OSError with ENOSPC/EDQUOT (Python writes, shutil),
sqlite's SQLITE_FULL ("database or disk is full"), a Rust error text from safetensors
("No space left on device"), or torch's "file write failed" while the disk has no room left.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from medalpaca_desktop.core.model_info import format_size
from medalpaca_desktop.core.paths import free_space

#: The error kind the GUI and the CLI see for a full disk (events, DownloadError, run rows).
DISK_FULL_KIND = "disk"
#: Below this many free bytes a failed write is taken for a full disk whatever the library said.
LOW_SPACE = 1 << 20
_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = 13  # sqlite3.SQLITE_FULL (Python 3.11 has it; typeshed does not list it)
_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded", "storagefull",
          "os error 28", "errno 28")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_disk_full(exc: BaseException, folder: str | Path | None = None) -> bool:
    """Whether `exc` (or what caused it) says the disk is full.

    `folder`: where the failed write went; a write failure (OSError, RuntimeError) while that
    disk has under LOW_SPACE free counts too (torch's zip writer only says "file write failed").
    """
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno in _ERRNOS:
            return True
        if isinstance(item, sqlite3.Error) and getattr(item, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if any(text in str(item).lower() for text in _TEXTS):
            return True
    if folder is not None and isinstance(exc, (OSError, RuntimeError)):
        free = free_space(Path(folder))
        return free is not None and free < LOW_SPACE
    return False


def disk_full_message(folder: str | Path, what: str, *, needed: int | None = None, kept: str = "",
                      then: str = "try again") -> str:
    """One sentence: which disk, how much is free, what to do, what was kept.

    `what`: what was being written ("the checkpoint", "the GGUF file"); `needed`: bytes a
    check up front asked for (then the sentence says 'Not enough disk space'); `kept`: what
    is intact ("the last checkpoint is intact"); `then`: what to do once space is free.
    """
    folder = Path(folder)
    free = free_space(folder)
    free_text = f"{format_size(free) if free else 'nothing'} free" if free is not None else "free space unknown"
    if needed is not None:
        head = f"Not enough disk space in {folder} for {what} (about {format_size(needed)} needed, {free_text})"
    else:
        head = f"The disk is full at {folder} ({free_text}) while writing {what}"
    return f"{head}: free some space and {then}" + (f"; {kept}" if kept else "") + "."
