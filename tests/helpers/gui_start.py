"""Start the GUI in a fresh process for boundary and start-up tests.

`gui_start.py check`: build the app and main window, show it, wait for it to be
exposed and for model discovery, then print one JSON line (when the window was
shown, heavy modules loaded) and exit.
`gui_start.py main`: run the real `medalpaca_desktop.ui.app.main()` and print
WINDOW_SHOWN once the window is visible (a test then sends SIGINT).
"""

from __future__ import annotations

import json
import sys
import time

HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "llama_cpp", "datasets", "accelerate")


def heavy_modules() -> list[str]:
    return sorted(name for name in sys.modules if name.split(".")[0] in HEAVY)


def check() -> int:
    from PySide6.QtTest import QTest

    from medalpaca_desktop.ui.app import create_application
    from medalpaca_desktop.ui.main_window import MainWindow

    app = create_application([sys.argv[0]])
    window = MainWindow()
    window.show()
    exposed = QTest.qWaitForWindowExposed(window, 10_000)
    shown_at = time.time()
    heavy_at_show = heavy_modules()
    discovered: list[int] = []
    window.model_manager.sig_discovery_finished.connect(lambda models, problems: discovered.append(len(models)))
    window.start()
    deadline = time.monotonic() + 30
    while not discovered and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    print(json.dumps({
        "exposed": bool(exposed),
        "visible": window.isVisible(),
        "title": window.windowTitle(),
        "shown_at": shown_at,
        "models": discovered[0] if discovered else None,
        "heavy_at_show": heavy_at_show,
        "heavy_after_discovery": heavy_modules(),
    }), flush=True)
    window.close()
    return 0


def main_app() -> int:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from medalpaca_desktop.ui import app as app_module

    def announce() -> None:
        windows = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
        if windows:
            print("WINDOW_SHOWN", flush=True)
        else:
            QTimer.singleShot(50, announce)

    original = app_module.create_application

    def create_application(argv):
        app = original(argv)
        QTimer.singleShot(0, announce)
        return app

    app_module.create_application = create_application
    code = app_module.main([sys.argv[0]])
    print(f"EXITED {code}", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(check() if sys.argv[1] == "check" else main_app())
