"""Say plainly why the window cannot open, instead of Qt's abort and core dump."""

from __future__ import annotations

import ctypes.util
import os
import sys


def display_problem(environ: dict[str, str] | None = None, platform: str | None = None) -> str | None:
    """A sentence for the user when Qt will not find a screen on Linux; None when it should."""
    env = os.environ if environ is None else environ
    platform = platform or sys.platform
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("No display found (neither DISPLAY nor WAYLAND_DISPLAY is set). MedAlpaca Desktop needs a "
                "graphical session; over SSH use `ssh -X`, or use the `medalpaca` command line instead.")
    if not env.get("WAYLAND_DISPLAY") and ctypes.util.find_library("xcb-cursor") is None:
        return ("Qt needs the system library libxcb-cursor0 to open a window on X11. Install it "
                "(Debian/Ubuntu: `sudo apt install libxcb-cursor0`, Fedora: `sudo dnf install xcb-util-cursor`).")
    return None
