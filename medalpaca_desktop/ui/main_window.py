"""The main window: Models, Chat, Fine-tune and Benchmark tabs, menus, status bar.

Constructing it reads no model files: `start()` (called once it is shown) kicks
off discovery on a worker thread and the devices check in a subprocess.
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.model_info import ModelInspectError
from medalpaca_desktop.core.models import inspect_model
from medalpaca_desktop.ui.about import AboutDialog
from medalpaca_desktop.ui.benchmark.tab import BenchmarkTab
from medalpaca_desktop.ui.chat.tab import ChatTab
from medalpaca_desktop.ui.devices import DeviceProbe, DevicesDialog, summarize
from medalpaca_desktop.ui.finetune.tab import FinetuneTab
from medalpaca_desktop.ui.icons import app_icon
from medalpaca_desktop.ui.models.manager import ModelManager
from medalpaca_desktop.ui.settings_dialog import SettingsDialog
from medalpaca_desktop.ui.settings_store import SettingsStore
from medalpaca_desktop.ui.workers import TaskManager

WINDOW_TITLE = "MedAlpaca Desktop"
TAB_MODELS, TAB_CHAT, TAB_FINETUNE, TAB_BENCHMARK = range(4)


class MainWindow(QMainWindow):
    """The app's one window."""

    def __init__(self, store: SettingsStore | None = None, device_probe: DeviceProbe | None = None) -> None:
        super().__init__()
        self.setWindowTitle(WINDOW_TITLE)
        self.setWindowIcon(app_icon("app"))
        self.resize(1280, 780)
        self.store = store or SettingsStore(parent=self)
        self.tasks = TaskManager(self)
        self.device_probe = device_probe or DeviceProbe(self)
        self._qsettings: QSettings | None = None
        self.devices_dialog: DevicesDialog | None = None
        self.settings_dialog: SettingsDialog | None = None
        self.about_dialog: AboutDialog | None = None

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.model_manager = ModelManager(self.store, self.tasks)
        self.tabs.addTab(self.model_manager, app_icon("models"), "Models")
        self.chat_tab = ChatTab(settings_store=self.store)
        self.chat_tab.sig_add_model_requested.connect(self._on_add_folder_action_triggered)
        self.chat_tab.sig_download_requested.connect(self._on_chat_tab_download_requested)
        self.model_manager.sig_discovery_finished.connect(self.chat_tab.set_models)
        self.finetune_tab = FinetuneTab()
        self.finetune_tab.sig_chat_requested.connect(self._on_finetune_tab_chat_requested)
        self.finetune_tab.sig_status_changed.connect(self._on_model_manager_status_changed)
        self.model_manager.sig_discovery_finished.connect(self.finetune_tab.set_models)
        self.benchmark_tab = BenchmarkTab(tasks=self.tasks)
        self.benchmark_tab.sig_add_model_requested.connect(self.show_model_manager)
        self.benchmark_tab.sig_status_changed.connect(self._on_model_manager_status_changed)
        self.model_manager.sig_discovery_finished.connect(self.benchmark_tab.set_models)
        self.tabs.addTab(self.chat_tab, app_icon("chat"), "Chat")
        self.tabs.addTab(self.finetune_tab, app_icon("finetune"), "Fine-tune")
        self.tabs.addTab(self.benchmark_tab, app_icon("benchmark"), "Benchmark")
        for index, tip in ((TAB_MODELS, "Models found on this computer (Ctrl+1)"),
                           (TAB_CHAT, "Chat with a local model (Ctrl+2)"),
                           (TAB_FINETUNE, "Fine-tune a model on your data, watch and resume runs (Ctrl+3)"),
                           (TAB_BENCHMARK, "Score models on USMLE-style questions, compare them in charts (Ctrl+4)")):
            self.tabs.setTabToolTip(index, tip)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.settings_banner = self._build_settings_banner()
        layout.addWidget(self.settings_banner)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self._build_menus()
        self._build_status_bar()
        self.model_manager.sig_status_changed.connect(self._on_model_manager_status_changed)
        self.device_probe.sig_report_received.connect(self._on_device_probe_report_received)
        self.device_probe.sig_probe_failed.connect(self._on_device_probe_failed)
        self.device_probe.sig_report_received.connect(self.finetune_tab.set_device_report)

    # -- building -----------------------------------------------------------------

    def _build_settings_banner(self) -> QFrame:
        banner = QFrame()
        banner.setObjectName("settingsBanner")
        banner.setStyleSheet("#settingsBanner { background: #fff4e0; border-bottom: 1px solid #e0b25c; }"
                             "#settingsBanner QLabel { color: #5a3a00; }")
        self.settings_banner_label = QLabel()
        self.settings_banner_label.setWordWrap(True)
        self.settings_banner_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setToolTip("Hide this message")
        close.setAutoRaise(True)
        close.clicked.connect(banner.hide)
        row = QHBoxLayout(banner)
        row.setContentsMargins(12, 6, 6, 6)
        row.addWidget(self.settings_banner_label, 1)
        row.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        if self.store.load_error:
            self.settings_banner_label.setText(
                f"<b>Your settings file could not be read; the app uses default settings for now.</b> "
                f"The file was left as it is (saving settings keeps a copy as "
                f"{self.store.backup_path().name}).<br>{html.escape(self.store.load_error_summary())}")
            self.settings_banner_label.setToolTip(self.store.load_error)
        else:
            banner.hide()
        return banner

    def _action(self, text: str, slot, shortcut: QKeySequence | str | None = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.add_folder_action = self._action("&Add model folder…", self._on_add_folder_action_triggered,
                                              "Ctrl+O", "Search another folder for models")
        self.inspect_action = self._action("&Inspect model file…", self.model_manager.choose_file_to_inspect,
                                           tip="Read one model file's metadata")
        self.settings_action = self._action("&Settings…", self.open_settings, "Ctrl+,", "Model folders and safety")
        self.settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)
        self.quit_action = self._action("&Quit", self.close, "Ctrl+Q", "Close MedAlpaca Desktop")
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        file_menu.addAction(self.add_folder_action)
        file_menu.addAction(self.inspect_action)
        file_menu.addSeparator()
        file_menu.addAction(self.settings_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)

        view_menu = bar.addMenu("&View")
        self.tab_actions: list[QAction] = []
        for index in range(self.tabs.count()):
            action = self._action(self.tabs.tabText(index), lambda _=False, i=index: self.tabs.setCurrentIndex(i),
                                  f"Ctrl+{index + 1}")
            view_menu.addAction(action)
            self.tab_actions.append(action)
        view_menu.addSeparator()
        self.refresh_action = self._action("&Refresh models", self._on_refresh_action_triggered, "F5",
                                           "Search all model folders again")
        view_menu.addAction(self.refresh_action)

        help_menu = bar.addMenu("&Help")
        self.devices_action = self._action("This computer's &devices…", self.open_devices,
                                           tip="GPUs, CPU and memory available for chat and training")
        self.about_action = self._action("&About MedAlpaca Desktop", self.open_about)
        self.about_action.setMenuRole(QAction.MenuRole.AboutRole)
        help_menu.addAction(self.devices_action)
        help_menu.addSeparator()
        help_menu.addAction(self.about_action)

    def _build_status_bar(self) -> None:
        self.devices_label = QLabel("Checking devices…")
        self.devices_label.setToolTip("Click for details")
        self.devices_label.setTextFormat(Qt.TextFormat.RichText)
        self.devices_label.linkActivated.connect(lambda _link: self.open_devices())
        self.statusBar().addPermanentWidget(self.devices_label)
        self.statusBar().showMessage("Starting…")

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Begin background work once the window is on screen."""
        QTimer.singleShot(0, self.model_manager.refresh)
        QTimer.singleShot(200, self.device_probe.start)  # after discovery: it competes for the CPU

    def use_qsettings(self, qsettings: QSettings) -> None:
        """Restore window geometry from, and save it to, `qsettings` (the app does; tests do not)."""
        self._qsettings = qsettings
        geometry = qsettings.value("main_window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        tab = qsettings.value("main_window/tab", TAB_MODELS, type=int)
        if 0 <= tab < self.tabs.count():
            self.tabs.setCurrentIndex(tab)

    def closeEvent(self, event: QCloseEvent) -> None:
        count = len(self.finetune_tab.active_runs()) + len(self.benchmark_tab.active_runs())
        if count:
            choice = self.ask_about_active_runs(count)
            if choice == "cancel":
                event.ignore()
                return
            if choice == "stop":
                self.finetune_tab.stop_all()
                self.benchmark_tab.stop_all()
        if self._qsettings is not None:
            self._qsettings.setValue("main_window/geometry", self.saveGeometry())
            self._qsettings.setValue("main_window/tab", self.tabs.currentIndex())
        self.shutdown()
        super().closeEvent(event)

    def active_jobs_text(self) -> str:
        """"1 fine-tune and 1 benchmark are still running.": what runs on without the window."""
        parts = []
        for count, noun in ((len(self.finetune_tab.active_runs()), "fine-tune"),
                            (len(self.benchmark_tab.active_runs()), "benchmark")):
            if count:
                parts.append(f"{count} {noun}{'s' if count > 1 else ''}")
        total = len(self.finetune_tab.active_runs()) + len(self.benchmark_tab.active_runs())
        return f"{' and '.join(parts)} {'are' if total > 1 else 'is'} still running."

    def active_jobs_details(self) -> str:
        """What each answer of the close question does, and what becomes of benchmarks still queued."""
        waiting = len(self.benchmark_tab.queue.pending())
        queued = (f" {waiting} queued benchmark{'s' if waiting > 1 else ''} not started yet will not start; "
                  "queue them again after the restart." if waiting else "")
        return ("Stop saves what was done first (a fine-tune's checkpoint, a benchmark's scored questions), so "
                "you can resume later. A job left running goes on without the window and is shown again when the "
                "app starts." + queued)

    def ask_about_active_runs(self, count: int) -> str:
        """"stop" (fine-tunes with a checkpoint, benchmarks with a partial summary), "leave" (running;
        picked up on the next start) or "cancel"; `count` jobs run."""
        title = "Fine-tune running" if not self.benchmark_tab.active_runs() else \
            "Benchmark running" if not self.finetune_tab.active_runs() else "Jobs running"
        box = QMessageBox(QMessageBox.Icon.Question, title, self.active_jobs_text(), parent=self)
        box.setInformativeText(self.active_jobs_details())
        stop = box.addButton("Stop and save", QMessageBox.ButtonRole.DestructiveRole)
        leave = box.addButton("Leave running", QMessageBox.ButtonRole.AcceptRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(leave)
        box.setEscapeButton(cancel)
        box.exec()
        clicked = box.clickedButton()
        return "stop" if clicked is stop else "leave" if clicked is leave else "cancel"

    def shutdown(self) -> None:
        """End child processes and background tasks (closing, quitting, tests).

        Fine-tunes and benchmarks are not child processes: they keep running and are picked up on
        the next start (unless they were asked to stop, then they finish stopping on their own).
        """
        self.device_probe.shutdown()
        self.chat_tab.shutdown()
        self.finetune_tab.shutdown()
        self.benchmark_tab.shutdown()
        self.tasks.shutdown()

    # -- actions ------------------------------------------------------------------

    @Slot()
    def show_model_manager(self) -> None:
        self.tabs.setCurrentIndex(TAB_MODELS)

    @Slot()
    def _on_add_folder_action_triggered(self) -> None:
        self.show_model_manager()
        self.model_manager.choose_folder()

    @Slot()
    def _on_chat_tab_download_requested(self) -> None:
        """The model manager owns downloading; its dialog opens from there."""
        self.show_model_manager()
        opener = getattr(self.model_manager, "open_download_dialog", None)
        if opener is not None:
            opener()

    @Slot(str)
    def _on_finetune_tab_chat_requested(self, path: str) -> None:
        """A fine-tuned model (merged folder, adapter or GGUF) opens in the chat tab."""
        folder = Path(path)
        try:
            info = inspect_model(folder)
        except (ModelInspectError, OSError) as exc:
            self.statusBar().showMessage(f"Cannot open {path} in the chat: {exc}")
            return
        if folder.name in ("final", "merged"):  # name it after its run, not "final"
            info = dataclasses.replace(info, name=f"{folder.parent.name} ({folder.name})")
        self.chat_tab.load_model(info)
        self.tabs.setCurrentIndex(TAB_CHAT)

    @Slot()
    def _on_refresh_action_triggered(self) -> None:
        self.show_model_manager()
        self.model_manager.refresh()

    @Slot()
    def open_settings(self) -> SettingsDialog:
        self.settings_dialog = SettingsDialog(self.store, self)
        self.settings_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.settings_dialog.accepted.connect(self.settings_banner.hide)
        self.settings_dialog.open()
        return self.settings_dialog

    @Slot()
    def open_about(self) -> AboutDialog:
        self.about_dialog = AboutDialog(self)
        self.about_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.about_dialog.open()
        return self.about_dialog

    @Slot()
    def open_devices(self) -> DevicesDialog:
        if self.device_probe.report is None and not self.device_probe.is_running():
            self.device_probe.start()
        self.devices_dialog = DevicesDialog(self.device_probe, self)
        self.devices_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.devices_dialog.show()
        return self.devices_dialog

    # -- status -------------------------------------------------------------------

    @Slot(str)
    def _on_model_manager_status_changed(self, text: str) -> None:
        self.statusBar().showMessage(text)

    @Slot(object)
    def _on_device_probe_report_received(self, report) -> None:
        self.devices_label.setText(f"<a href='devices'>{summarize(report)}</a>")
        self.devices_label.setToolTip("No CUDA GPU found: training and chat run on the CPU (slower). "
                                      "Click for details." if not report.gpus else "Click for details")

    @Slot(str)
    def _on_device_probe_failed(self, message: str) -> None:
        self.devices_label.setText("<a href='devices'>Devices: unknown</a>")
        self.devices_label.setToolTip(message)
