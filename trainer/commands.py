"""The command lines that run a fine-tune, for the GUI to launch and to show (copyable).

Kept apart from launch.py (which imports the engine) so the GUI may import it: it
builds argument lists only.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def train_command(config_path: str | Path, *, resume: bool = False, num_processes: int | None = None,
                  python: str | None = None) -> list[str]:
    """`python -m trainer run CONFIG [--resume] [--num-processes N]`: what the GUI starts."""
    cmd = [python or sys.executable, "-m", "trainer", "run", str(config_path)]
    if num_processes and num_processes > 1:
        cmd += ["--num-processes", str(num_processes)]
    if resume:
        cmd.append("--resume")
    return cmd


def user_command(config_path: str | Path, *, resume: bool = False, num_processes: int | None = None) -> str:
    """The same job as a person types it in a terminal: `medalpaca train CONFIG ...`."""
    cmd = ["medalpaca", "train", str(config_path)]
    if num_processes and num_processes > 1:
        cmd += ["--num-processes", str(num_processes)]
    if resume:
        cmd.append("--resume")
    return shlex.join(cmd)
