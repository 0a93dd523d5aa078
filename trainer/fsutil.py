"""Folder replacement that never leaves a half-written result in place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_folder(tmp: Path, target: Path) -> Path:
    """Move the finished `tmp` folder to `target`, replacing an older `target` only once `tmp` is complete.

    The old folder is moved aside first and deleted last, so a crash between the two renames
    leaves either the old or the new result, never neither.
    """
    if target.exists():
        old = target.with_name(f".{target.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target
