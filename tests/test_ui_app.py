"""Main window, menus, settings, About and devices, offscreen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.ui_support import GPU_REPORT, NO_GPU_REPORT, fake_probe_command, isolate_user_home
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QCheckBox

from medalpaca_desktop.core.settings import AppSettings, load_settings, settings_path
from medalpaca_desktop.ui.about import AboutDialog, about_text
from medalpaca_desktop.ui.devices import NO_GPU_TEXT, DeviceProbe, DevicesDialog, probe_command
from medalpaca_desktop.ui.main_window import TAB_BENCHMARK, TAB_CHAT, TAB_FINETUNE, TAB_MODELS, MainWindow
from medalpaca_desktop.ui.settings_dialog import FolderListEditor, SettingsDialog
from medalpaca_desktop.ui.settings_store import SettingsStore

HELPERS = Path(__file__).parent / "helpers"
WAIT_MS = 20_000


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)


@pytest.fixture
def make_window(qtbot):
    windows: list[MainWindow] = []

    def make(report: dict | None = NO_GPU_REPORT, **probe_kwargs) -> MainWindow:
        probe = DeviceProbe(command=fake_probe_command(report, **probe_kwargs))
        window = MainWindow(device_probe=probe)
        probe.setParent(window)
        qtbot.addWidget(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.shutdown()


@pytest.fixture
def window(make_window):
    return make_window()


def test_window_tabs_fit_a_small_screen(qtbot, window):
    window.show()
    qtbot.waitExposed(window)
    assert window.windowTitle() == "MedAlpaca Desktop"
    assert [window.tabs.tabText(i) for i in range(window.tabs.count())] == ["Models", "Chat", "Fine-tune", "Benchmark"]
    assert window.tabs.widget(TAB_CHAT) is window.chat_tab
    assert window.tabs.widget(TAB_FINETUNE) is window.finetune_tab
    assert window.tabs.widget(TAB_BENCHMARK) is window.benchmark_tab
    assert window.minimumSizeHint().width() <= 1280  # every tab fits the default window on a laptop
    window.tabs.setCurrentIndex(TAB_BENCHMARK)
    qtbot.mouseClick(window.benchmark_tab.setup.add_model_button, Qt.MouseButton.LeftButton)
    assert window.tabs.currentIndex() == TAB_MODELS


def test_menus_and_shortcuts(qtbot, window):
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    shortcuts = {a.text(): a.shortcut() for a in
                 (window.add_folder_action, window.settings_action, window.quit_action, window.refresh_action)}
    assert shortcuts["&Add model folder…"] == QKeySequence("Ctrl+O")
    assert shortcuts["&Settings…"] == QKeySequence("Ctrl+,")
    assert shortcuts["&Quit"] == QKeySequence("Ctrl+Q")
    assert shortcuts["&Refresh models"] == QKeySequence("F5")
    assert [a.shortcut().toString() for a in window.tab_actions] == ["Ctrl+1", "Ctrl+2", "Ctrl+3", "Ctrl+4"]
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus == ["&File", "&View", "&Help"]
    for index in (TAB_FINETUNE, TAB_CHAT, TAB_BENCHMARK, TAB_MODELS):
        window.tab_actions[index].trigger()
        assert window.tabs.currentIndex() == index
    QTest.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    if window.isActiveWindow():  # offscreen windows are usually active; the shortcut then works end to end
        assert window.tabs.currentIndex() == TAB_FINETUNE


def test_start_discovers_and_probes_devices(qtbot, window):
    window.show()
    with qtbot.waitSignals([window.model_manager.sig_discovery_finished, window.device_probe.sig_report_received],
                           timeout=WAIT_MS):
        window.start()
    assert window.model_manager.table_model.rowCount() >= 1
    assert "Model search finished" in window.statusBar().currentMessage()
    assert "CPU only" in window.devices_label.text()
    assert "No CUDA GPU found" in window.devices_label.toolTip()


def test_devices_dialog_without_gpu(qtbot, window):
    with qtbot.waitSignal(window.device_probe.sig_report_received, timeout=WAIT_MS):
        window.device_probe.start()
    dialog = window.open_devices()
    assert dialog.panel.headline.text() == NO_GPU_TEXT
    dialog.close()


def test_devices_panel_with_gpu(qtbot, make_window):
    window = make_window(GPU_REPORT)
    with qtbot.waitSignal(window.device_probe.sig_report_received, timeout=WAIT_MS):
        window.device_probe.start()
    assert "GPU: NVIDIA RTX A6000 (51.0 GB)" in window.devices_label.text()
    dialog = DevicesDialog(window.device_probe, window)
    assert dialog.panel.headline.text() == "1 CUDA GPU found."
    # "Check again" runs the probe again and shows the fresh report.
    with qtbot.waitSignal(window.device_probe.sig_report_received, timeout=WAIT_MS):
        qtbot.mouseClick(dialog.panel.recheck_button, Qt.MouseButton.LeftButton)
    assert dialog.panel.headline.text() == "1 CUDA GPU found."


def test_devices_probe_failure_is_a_message(qtbot, make_window):
    window = make_window(None, exit_code=1, stderr="ModuleNotFoundError: no module named devices\n")
    with qtbot.waitSignal(window.device_probe.sig_probe_failed, timeout=WAIT_MS) as blocker:
        window.device_probe.start()
    assert blocker.args[0].startswith("Could not check this computer's devices")
    assert "Devices: unknown" in window.devices_label.text()
    dialog = DevicesDialog(window.device_probe, window)
    assert "Could not check" in dialog.panel.headline.text()


def test_real_devices_command_answers_or_fails_gracefully(qtbot):
    probe = DeviceProbe(command=probe_command())
    probe.start()
    try:
        qtbot.waitUntil(lambda: probe.report is not None or probe.error is not None, timeout=60_000)
    finally:
        probe.shutdown()
    if probe.report is not None:
        assert probe.report.cpu_cores >= 1


def test_about_box(qtbot, window):
    dialog = window.open_about()
    assert isinstance(dialog, AboutDialog) and dialog.isVisible()
    text = about_text()
    assert "MedAlpaca Desktop is not a medical device" in text
    assert "do not use them for diagnosis or treatment without a clinician's judgement" in text
    assert "Nothing leaves this machine." in text
    assert "arXiv:2304.08247" in text and "License" in text and "0.1.0" in text
    assert "not a medical device" in dialog.warning_label.text()
    assert "MedAlpaca" in dialog.citation_view.toPlainText()
    dialog.close()


def test_settings_dialog_saves_and_has_field_help(qtbot, tmp_path):
    store = SettingsStore()
    dialog = SettingsDialog(store)
    qtbot.addWidget(dialog)
    assert set(dialog.editors) == {"model_folders", "scan_hf_cache", "scan_other_apps", "allow_pickle_weights"}
    for name, editor in dialog.editors.items():
        assert editor.toolTip() == AppSettings.field_help(name)
    pickle_box = dialog.editors["allow_pickle_weights"]
    assert isinstance(pickle_box, QCheckBox) and not pickle_box.isChecked()
    dialog.editors["scan_hf_cache"].setChecked(False)
    folders = dialog.editors["model_folders"]
    assert isinstance(folders, FolderListEditor)
    folders.add_folder(str(tmp_path / "my models"))
    changed: list[AppSettings] = []
    store.sig_settings_changed.connect(changed.append)
    dialog.accept()
    saved = load_settings()
    assert saved.scan_hf_cache is False
    assert saved.model_folders == [str(tmp_path / "my models")]
    assert changed and changed[0] == saved


def test_settings_dialog_from_menu_updates_model_manager(qtbot, window, tmp_path):
    dialog = window.open_settings()
    dialog.editors["model_folders"].add_folder(str(tmp_path))
    with qtbot.waitSignal(window.model_manager.sig_discovery_finished, timeout=WAIT_MS):
        dialog.button_box.button(dialog.button_box.StandardButton.Save).click()
    assert window.model_manager.folder_list.item(0).text() == str(tmp_path)


def test_unreadable_settings_file_falls_back_without_destroying_it(qtbot, make_window):
    path = settings_path()
    broken = "model_folders: [unclosed\n  - oops: :\n"
    path.write_text(broken, encoding="utf-8")
    window = make_window()
    assert window.store.load_error and "not valid settings YAML" in window.store.load_error
    assert window.store.settings == AppSettings()
    assert window.settings_banner.isVisibleTo(window)
    assert "could not be read" in window.settings_banner_label.text()
    assert path.read_text(encoding="utf-8") == broken  # untouched by starting

    dialog = SettingsDialog(window.store)
    qtbot.addWidget(dialog)
    dialog.accept()
    assert load_settings() == AppSettings()
    assert window.store.backup_path().read_text(encoding="utf-8") == broken  # the user's text kept


def test_signal_emit_keeps_refcount_of_true():
    """PySide6 6.12.0 drops a reference to True per emit (an abort after ~600 on Python 3.11).

    pyproject.toml keeps PySide6 below 6.12 for that; this guards any release let in later.
    """

    class Emitter(QObject):
        sig_value_changed = Signal(int)

    emitter = Emitter()
    received: list[int] = []
    emitter.sig_value_changed.connect(received.append)
    before = sys.getrefcount(True)
    for i in range(3000):
        emitter.sig_value_changed.emit(i)
    assert len(received) == 3000
    assert abs(sys.getrefcount(True) - before) < 50


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_terminal_quits_cleanly(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(HELPERS / "gui_start.py"), "main"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "WINDOW_SHOWN"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "EXITED 0" in out
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
