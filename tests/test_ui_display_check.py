"""A missing screen is a sentence, not Qt's abort."""

import subprocess
import sys

from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.ui.display_check import display_problem


def test_no_display_is_explained():
    assert "No display found" in display_problem({}, "linux")
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert display_problem({}, "darwin") is None


def test_app_exits_2_with_message_without_display():
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    proc = subprocess.run([sys.executable, "-c", "from medalpaca_desktop.ui.app import main; raise SystemExit(main())"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == ExitCode.NOT_AVAILABLE
    assert "No display found" in proc.stderr and "Traceback" not in proc.stderr
