"""The model manager driven as a user would: list, add/remove folders, inspect."""

from __future__ import annotations

import threading

import pytest
from helpers.tiny_models import write_corrupt_gguf, write_pickle_hf_dir, write_tiny_gguf
from helpers.ui_support import isolate_user_home
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from medalpaca_desktop.core.model_info import ModelInfo
from medalpaca_desktop.core.settings import AppSettings, load_settings, save_settings
from medalpaca_desktop.ui.models import manager as manager_module
from medalpaca_desktop.ui.models.manager import ModelManager
from medalpaca_desktop.ui.models.table_model import MODEL_ROLE, SORT_ROLE, Column, ModelTableModel
from medalpaca_desktop.ui.settings_store import SettingsStore
from medalpaca_desktop.ui.workers import TaskManager

DISCOVERY_MS = 20_000
DEMO_LABEL = "not medical, for trying the app"


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)


@pytest.fixture
def make_manager(qtbot):
    """Build a ModelManager on the settings saved so far (call after saving any)."""
    pools: list[TaskManager] = []

    def make() -> ModelManager:
        tasks = TaskManager()
        pools.append(tasks)
        widget = ModelManager(SettingsStore(), tasks)
        qtbot.addWidget(widget)
        widget.resize(1100, 700)
        return widget

    yield make
    for tasks in pools:
        tasks.shutdown()


@pytest.fixture
def manager(make_manager):
    return make_manager()


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "models"
    write_tiny_gguf(folder / "tiny-medical.F32.gguf")
    write_corrupt_gguf(folder / "broken.gguf")
    write_pickle_hf_dir(folder / "old-medalpaca-7b")
    return folder


def refresh(qtbot, manager: ModelManager) -> None:
    with qtbot.waitSignal(manager.sig_discovery_finished, timeout=DISCOVERY_MS):
        manager.refresh()


def cell(manager: ModelManager, name: str, column: Column) -> str:
    row = next(r for r, m in enumerate(manager.table_model.models()) if m.name == name)
    return manager.table_model.index(row, column).data()


def names(manager: ModelManager) -> list[str]:
    return [m.name for m in manager.table_model.models()]


def test_demo_model_listed_and_labelled(qtbot, manager):
    refresh(qtbot, manager)
    demo = next(m for m in manager.table_model.models() if m.is_demo)
    assert DEMO_LABEL in cell(manager, demo.name, Column.SOURCE)
    assert cell(manager, demo.name, Column.KIND) == "GGUF"
    assert cell(manager, demo.name, Column.QUANTIZATION) == "Q4_1"
    # The first row is selected so the details pane is never blank.
    assert manager.selected_model() == demo
    assert manager.details.title_label.text() == demo.name
    assert any("not medical, for trying the app" in text for text in manager.details.banner_texts())
    assert "im_start" in manager.details.template_view.toPlainText()  # its chat template preview
    assert manager.table_view.isVisibleTo(manager)
    assert "1 model found" in manager.summary_label.text()


def test_add_folder_lists_models_and_problems_then_remove(qtbot, manager, model_folder):
    refresh(qtbot, manager)
    with qtbot.waitSignal(manager.sig_discovery_finished, timeout=DISCOVERY_MS):
        assert manager.add_folder(model_folder)
    assert "tiny-medical.F32" in names(manager)
    assert "old-medalpaca-7b" in names(manager)
    assert load_settings().model_folders == [str(model_folder)]  # persisted
    assert manager.folder_list.item(0).text() == str(model_folder)
    # The unreadable file is listed plainly, not hidden and not fatal.
    assert manager.problems_box.isVisibleTo(manager)
    problem = manager.problem_list.item(0).text()
    assert "broken.gguf" in problem and "not a GGUF file" in problem
    assert cell(manager, "tiny-medical.F32", Column.CONTEXT) == "2,048"

    assert manager.add_folder(model_folder) is False  # already there: nothing to do

    manager.folder_list.setCurrentRow(0)
    assert manager.remove_folder_button.isEnabled()
    with qtbot.waitSignal(manager.sig_discovery_finished, timeout=DISCOVERY_MS):
        qtbot.mouseClick(manager.remove_folder_button, Qt.MouseButton.LeftButton)
    assert "tiny-medical.F32" not in names(manager)
    assert load_settings().model_folders == []
    assert not manager.problems_box.isVisibleTo(manager)


def test_pickle_weights_marked_not_loaded_by_default(qtbot, make_manager, model_folder):
    save_settings(AppSettings(model_folders=[str(model_folder)]))
    manager = make_manager()
    assert manager.folder_list.item(0).text() == str(model_folder)
    refresh(qtbot, manager)
    assert manager.select_model(str(model_folder / "old-medalpaca-7b"))
    info = manager.selected_model()
    assert info.pickle_weights and not info.loadable_by_default
    assert any("not loaded by default" in text for text in manager.details.banner_texts())
    row = manager.table_model.row_of(info.path)
    icon = manager.table_model.index(row, Column.NAME).data(Qt.ItemDataRole.DecorationRole)
    assert icon is not None and not icon.isNull()


def test_inspect_corrupt_file_shows_one_line_error(qtbot, manager, tmp_path, monkeypatch):
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a, **k: shown.append((title, text)))
    bad = write_corrupt_gguf(tmp_path / "bad.gguf")
    with qtbot.waitSignal(manager.sig_inspection_finished, timeout=DISCOVERY_MS):
        manager.inspect_path(bad)
    assert len(shown) == 1
    title, text = shown[0]
    assert title == "Cannot read this model"
    assert "bad.gguf" in text and "not a GGUF file" in text
    assert "\n" not in text and "Traceback" not in text


def test_inspect_good_file_opens_details(qtbot, manager, tmp_path):
    good = write_tiny_gguf(tmp_path / "one" / "solo.gguf", context_length=4096)
    with qtbot.waitSignal(manager.sig_inspection_finished, timeout=DISCOVERY_MS) as blocker:
        manager.inspect_path(good)
    assert isinstance(blocker.args[0], ModelInfo)
    dialog = manager.inspect_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.details.title_label.text() == "solo"
    assert "<|{{ m['role'] }}|>" in dialog.details.template_view.toPlainText()
    dialog.close()


def test_empty_state_when_nothing_found(qtbot, manager, monkeypatch):
    monkeypatch.setattr(manager_module, "discover_models", lambda *a, **k: ([], []))
    refresh(qtbot, manager)
    assert manager._stack.currentWidget() is manager.empty_state
    assert "No models found" in manager.empty_state.title_label.text()
    assert manager.empty_state.action_button.text() == "Add folder…"


def test_discovery_runs_off_the_ui_thread_and_failures_are_shown(qtbot, manager, monkeypatch):
    threads: list[threading.Thread] = []

    def failing_discovery(*args, **kwargs):
        threads.append(threading.current_thread())
        raise OSError("disk went away")

    monkeypatch.setattr(manager_module, "discover_models", failing_discovery)
    refresh(qtbot, manager)
    assert threads and threads[0] is not threading.main_thread()
    assert "disk went away" in manager.problem_list.item(0).text()
    assert manager.refresh_button.isEnabled()


def test_newer_refresh_wins(qtbot, manager, monkeypatch):
    calls: list[int] = []

    def discovery(*args, **kwargs):
        calls.append(1)
        return ([ModelInfo(path=f"/m{len(calls)}", name=f"model {len(calls)}", kind="gguf")], [])

    monkeypatch.setattr(manager_module, "discover_models", discovery)
    manager.refresh()
    with qtbot.waitSignal(manager.sig_discovery_finished, timeout=DISCOVERY_MS):
        manager.refresh()
    qtbot.wait(50)
    assert len(calls) == 2
    assert names(manager) in (["model 1"], ["model 2"])  # one list, never a mix
    assert not manager.is_searching()


def test_table_model_columns_and_sorting():
    big = ModelInfo(path="/a", name="Big", kind="hf", architecture="LlamaForCausalLM", model_type="llama",
                    parameters=6_700_000_000, quantization=None, context_length=4096, size_bytes=13_500_000_000)
    small = ModelInfo(path="/b", name="small", kind="gguf", parameters=135_000_000, quantization="Q8_0",
                      size_bytes=140_000_000, source="LM Studio")
    table = ModelTableModel()
    table.set_models([big, small])
    assert table.rowCount() == 2 and table.columnCount() == len(Column)
    header = [table.headerData(c, Qt.Orientation.Horizontal) for c in Column]
    assert header == ["Name", "Kind", "Architecture", "Parameters", "Quantization", "Context", "Size", "Source"]
    row = [table.index(0, c).data() for c in Column]
    assert row == ["Big", "Hugging Face", "llama", "6.7B", "-", "4,096", "13.5 GB", "Your folder"]
    assert table.index(1, Column.SOURCE).data() == "LM Studio"
    assert table.index(0, Column.SIZE).data(SORT_ROLE) > table.index(1, Column.SIZE).data(SORT_ROLE)
    assert table.index(1, Column.NAME).data(MODEL_ROLE) is small
    assert table.row_of("/b") == 1 and table.row_of("/nope") == -1


def test_project_fixture_models_listed_with_their_kinds(qtbot, make_manager, tiny_llama_dir, tiny_gguf,
                                                        tiny_lora_dir):
    """An HF folder, an exporter-made GGUF and a LoRA adapter, as the shared fixtures build them."""
    folders = [str(tiny_llama_dir), str(tiny_gguf.parent), str(tiny_lora_dir)]
    save_settings(AppSettings(model_folders=folders, scan_hf_cache=False, scan_other_apps=False))
    manager = make_manager()
    refresh(qtbot, manager)
    by_path = {m.path: m for m in manager.table_model.models()}
    kinds = {by_path[str(p)].kind for p in (tiny_llama_dir, tiny_gguf, tiny_lora_dir)}
    assert kinds == {"hf", "gguf", "adapter"}
    assert manager.select_model(str(tiny_lora_dir))
    rows = {manager.details._form.itemAt(i, manager.details._form.ItemRole.LabelRole).widget().text()
            for i in range(manager.details._form.rowCount())}
    assert "Base model:" in rows


def test_details_banners_say_each_thing_once():
    from medalpaca_desktop.core.models import PICKLE_NOTE
    from medalpaca_desktop.ui.models.details import model_banners, model_rows

    pickled = ModelInfo(path="/p", name="p", kind="hf", pickle_weights=True, loadable_by_default=False,
                        note=PICKLE_NOTE, parameters=4)
    banners = model_banners(pickled)
    assert len(banners) == 1 and "not loaded by default" in banners[0][1]
    assert ("Parameters", "4") in model_rows(pickled)
    odd = ModelInfo(path="/g", name="g", kind="gguf", model_type="gpt2", supported=False,
                    note="Architecture 'gpt2' is not one the app's engines handle "
                     "(LLaMA 1-3, Mistral, Qwen2/2.5/3, Gemma 2/3, Phi-3).")
    assert model_banners(odd) == [("warning", odd.note.replace("'", "&#x27;"))]
    assert ("Supported", "no: not an architecture the app handles") in model_rows(odd)


def test_convert_a_pickle_model_to_safetensors_from_the_tab(qtbot, make_manager, tmp_path, tiny_llama_dir,
                                                             monkeypatch):
    from test_convert import _pickle_copy

    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a, **k: shown.append(text))
    folder = tmp_path / "models"
    folder.mkdir()
    old = _pickle_copy(tiny_llama_dir, folder / "medalpaca-old", shards=2)
    write_pickle_hf_dir(folder / "fake-pickle")
    save_settings(AppSettings(model_folders=[str(folder)]))
    manager = make_manager()
    refresh(qtbot, manager)
    assert manager.select_model(str(folder / "fake-pickle")) and manager.convert_button.isEnabled()
    with qtbot.waitSignal(manager.converter.sig_finished, timeout=120_000):
        assert manager.convert_selected()
    assert len(shown) == 1 and "Not converted" in shown[0] and "cannot be read as tensors only" in shown[0]
    assert not (folder / "fake-pickle-safetensors").exists()

    assert manager.select_model(str(old)) and manager.convert_button.isEnabled()
    with qtbot.waitSignal(manager.converter.sig_finished, timeout=120_000):
        assert manager.convert_selected()
        assert not manager.convert_button.isEnabled()  # one conversion at a time
    new = str(folder / "medalpaca-old-safetensors")
    qtbot.waitUntil(lambda: getattr(manager.selected_model(), "path", None) == new, timeout=DISCOVERY_MS)
    info = manager.selected_model()  # the new copy, selected after the refresh
    assert not info.pickle_weights
    assert info.loadable_by_default and not manager.convert_button.isEnabled()
    assert not manager.select_model(str(tmp_path / "nowhere"))
    manager.table_view.clearSelection()
    assert not manager.convert_selected()
