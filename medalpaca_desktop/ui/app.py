"""`medalpaca-desktop`: start the GUI.

Keeps start-up light (the window appears before any model file is read) and
lets Ctrl+C in the terminal close the app cleanly.
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Sequence

from PySide6.QtCore import QSettings, QSocketNotifier
from PySide6.QtWidgets import QApplication

from medalpaca_desktop import __version__
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.ui.display_check import display_problem
from medalpaca_desktop.ui.icons import app_icon
from medalpaca_desktop.ui.main_window import MainWindow

APP_NAME = "MedAlpaca Desktop"
ORGANIZATION = "MedAlpaca"
ORGANIZATION_DOMAIN = "medalpaca.local"


def create_application(argv: Sequence[str] | None = None) -> QApplication:
    """The QApplication with the names QSettings and the desktop use."""
    app = QApplication.instance() or QApplication(list(argv if argv is not None else sys.argv))
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setOrganizationName(ORGANIZATION)
    app.setOrganizationDomain(ORGANIZATION_DOMAIN)
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("medalpaca-desktop")
    app.setWindowIcon(app_icon("app"))
    return app  # type: ignore[return-value]  # instance() is typed QCoreApplication; ours is a QApplication


def install_signal_handlers(app: QApplication) -> None:
    """SIGINT/SIGTERM close the windows (their cleanup runs) and quit.

    Qt's event loop runs in C++, where Python cannot run a signal handler; the
    wakeup fd makes a socket readable so Qt hands control back to Python.
    """
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno())
    notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read, app)

    def drain() -> None:
        try:
            reader.recv(64)
        except OSError:
            pass

    def on_signal(signum: int, frame: object) -> None:
        app.closeAllWindows()
        app.quit()

    notifier.activated.connect(drain)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    app._signal_wakeup = (reader, writer, notifier)  # type: ignore[attr-defined] # kept alive with the app


def main(argv: Sequence[str] | None = None) -> int:
    problem = display_problem()
    if problem:
        print(f"medalpaca-desktop: {problem}", file=sys.stderr)
        return ExitCode.NOT_AVAILABLE
    app = create_application(argv)
    install_signal_handlers(app)
    window = MainWindow()
    window.use_qsettings(QSettings())
    window.show()
    window.start()
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
