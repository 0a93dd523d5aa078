"""Folder replacement that never leaves a half-written result in place, and its recovery after a crash."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

OLD_SUFFIX = "-old"


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}{OLD_SUFFIX}")


def replace_folder(tmp: Path, target: Path) -> Path:
    """Move the finished `tmp` folder to `target`, replacing an older `target` only once `tmp` is complete.

    The old folder is moved aside first and deleted last, so a crash between the two renames
    leaves the old result under `.<name>-old` (recover_folder puts it back), never a half-deleted
    folder under the final name.
    """
    if target.exists():
        old = _old(target)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def recover_folders(parent: Path) -> list[str]:
    """Undo what a crash inside replace_folder left in `parent`; returns one note per folder touched.

    `.<name>-old` beside a missing `<name>` is the last good result (the crash fell between the
    two renames): it is put back. Beside a present `<name>` it is a leftover: removed.
    """
    notes: list[str] = []
    if not parent.is_dir():
        return notes
    for old in sorted(parent.glob(f".*{OLD_SUFFIX}")):
        if not old.is_dir():
            continue
        target = parent / old.name[1:-len(OLD_SUFFIX)]
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            notes.append(f"removed {old.name}, left by an interrupted save")
        else:
            os.replace(old, target)
            notes.append(f"restored {target.name} from {old.name} (a save was interrupted)")
    return notes


def remove_leftovers(*paths: Path) -> list[str]:
    """Remove half-written temp folders; returns one note per folder removed."""
    notes = []
    for path in paths:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"removed {path.name}, half written by an interrupted run")
    return notes
