"""Models in the user's folders are used in place; files added later appear without a restart."""

from __future__ import annotations

import shutil

import pytest
from helpers.tiny_models import write_tiny_gguf
from helpers.ui_support import isolate_user_home

from medalpaca_desktop.core.settings import AppSettings, save_settings
from medalpaca_desktop.ui.models.manager import ModelManager, watch_targets
from medalpaca_desktop.ui.settings_store import SettingsStore
from medalpaca_desktop.ui.workers import TaskManager

TIMEOUT_MS = 15_000


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "my models"
    (root / "publisher" / "repo").mkdir(parents=True)
    (root / ".hidden").mkdir()
    save_settings(AppSettings(model_folders=[str(root)], scan_hf_cache=False, scan_other_apps=False))
    return root


@pytest.fixture
def manager(qtbot, folder):
    tasks = TaskManager()
    widget = ModelManager(SettingsStore(), tasks)
    qtbot.addWidget(widget)
    widget._watch_timer.setInterval(200)  # the app waits 1 s after the last change
    yield widget
    tasks.shutdown()


def names(manager: ModelManager) -> list[str]:
    return [m.name for m in manager.table_model.models()]


def test_watch_targets_follow_discovery_depth(folder):
    deep = folder / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    targets = watch_targets([folder])
    assert str(folder) in targets and str(folder / "publisher" / "repo") in targets
    assert str(folder / "a" / "b" / "c" / "d") in targets  # depth 4, as discovery searches
    assert str(deep) not in targets and str(folder / ".hidden") not in targets


def test_gguf_copied_later_appears_without_restart(qtbot, manager, folder, tmp_path):
    with qtbot.waitSignal(manager.sig_discovery_finished, timeout=TIMEOUT_MS):
        manager.refresh()
    assert "copied-later" not in names(manager)
    sub = str(folder / "publisher" / "repo")
    qtbot.waitUntil(lambda: sub in manager.watched_folders(), timeout=TIMEOUT_MS)

    source = write_tiny_gguf(tmp_path / "elsewhere" / "copied-later.gguf", name="copied-later")
    shutil.copy(source, folder / "publisher" / "repo" / "copied-later.gguf")
    qtbot.waitUntil(lambda: "copied-later" in names(manager), timeout=TIMEOUT_MS)
    info = next(m for m in manager.table_model.models() if m.name == "copied-later")
    assert info.path == str(folder / "publisher" / "repo" / "copied-later.gguf")  # used in place, not copied

    # A folder created later is watched too: a model dropped into it shows up as well.
    (folder / "new-publisher").mkdir()
    qtbot.waitUntil(lambda: str(folder / "new-publisher") in manager.watched_folders(), timeout=TIMEOUT_MS)
    shutil.copy(source, folder / "new-publisher" / "second.gguf")
    qtbot.waitUntil(lambda: "second" in names(manager), timeout=TIMEOUT_MS)

    (folder / "new-publisher" / "second.gguf").unlink()
    qtbot.waitUntil(lambda: "second" not in names(manager), timeout=TIMEOUT_MS)
