"""The Download dialog drives the real worker through a PipeJob, against the local hub imitation."""

from __future__ import annotations

import hashlib
import sys

import pytest
from helpers.ui_support import isolate_user_home
from hub_server import HubServer
from PySide6.QtCore import Qt

from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.model_info import format_size
from medalpaca_desktop.hub import download as dl
from medalpaca_desktop.hub import repo_folder
from medalpaca_desktop.hub.catalog import CatalogEntry
from medalpaca_desktop.ui.models.download_dialog import ONLINE_NOTE, DownloadDialog
from medalpaca_desktop.ui.models.manager import ModelManager
from medalpaca_desktop.ui.settings_store import SettingsStore
from medalpaca_desktop.ui.workers import TaskManager

GGUF_REPO = "test-org/tiny-llama-GGUF"
HF_REPO = "test-org/tiny-llama"
GATED_REPO = "test-org/gated-llama"
JOB_MS = 30_000


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)


@pytest.fixture
def hub(tiny_llama_dir, tiny_gguf, monkeypatch):
    server = HubServer()
    server.add_repo(GGUF_REPO, {tiny_gguf.name: tiny_gguf.read_bytes(), "README.md": b"# tiny\n"})
    server.add_folder(HF_REPO, tiny_llama_dir)
    server.add_repo(GATED_REPO, {tiny_gguf.name: tiny_gguf.read_bytes()}, gated=True)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)  # no access token set up (HF_HOME is a fresh folder)
    monkeypatch.setenv(dl.CHUNK_ENV, str(16 * 1024))
    yield server
    server.stop()


@pytest.fixture
def manager(qtbot):
    tasks = TaskManager()
    widget = ModelManager(SettingsStore(), tasks)
    qtbot.addWidget(widget)
    widget.resize(1100, 700)
    yield widget
    if widget.download_dialog is not None:
        widget.download_dialog.runner.kill_now()
    tasks.shutdown()


CATALOG = [CatalogEntry(repo_id=GGUF_REPO, name="Tiny llama, GGUF f32", kind="gguf", include=("*.gguf",),
                        size_gb=0.001, license="Apache-2.0", medical=False, note="A test model.")]


def part_sizes(part_dir) -> list[int]:
    """Sizes of the partial files now; a small file may finish (and its .part vanish) between listing and stat."""
    sizes = []
    for part in part_dir.glob("*.part"):
        try:
            sizes.append(part.stat().st_size)
        except FileNotFoundError:
            continue
    return sizes


def check_size(qtbot, dialog: DownloadDialog) -> None:
    with qtbot.waitSignal(dialog.runner.sig_finished, timeout=JOB_MS):
        dialog.check_button.click()
    assert dialog.last_outcome is not None and dialog.last_outcome.ok, dialog.last_outcome


def test_dialog_downloads_and_the_manager_shows_the_model(qtbot, hub, manager, tiny_gguf):
    with qtbot.waitSignal(manager.sig_discovery_finished, timeout=JOB_MS):
        manager.refresh()
    dialog = manager.open_download_dialog()
    assert dialog.isVisible() and ONLINE_NOTE in dialog.online_note.text()
    assert "only place the app goes online" in ONLINE_NOTE
    dialog.catalog = CATALOG  # the shipped catalog names real hub repos; this one is served locally
    dialog.repo_edit.setText(GGUF_REPO)
    assert not dialog.download_button.isEnabled(), "size first, then download"

    check_size(qtbot, dialog)
    assert dialog.selected_files() == [tiny_gguf.name]
    assert f"1 of 2 files selected: {format_size(tiny_gguf.stat().st_size)}" in dialog.size_label.text()
    assert "Apache" in dialog.license_label.text() or "apache" in dialog.license_label.text()
    assert dialog.download_button.isEnabled()

    seen = []
    dialog.runner.sig_progress_changed.connect(seen.append)
    with qtbot.waitSignal(dialog.sig_model_downloaded, timeout=JOB_MS) as blocker:
        dialog.download_button.click()
        assert dialog.cancel_button.isEnabled() and not dialog.check_button.isEnabled()
    path = blocker.args[0]
    target = repo_folder(GGUF_REPO) / tiny_gguf.name
    assert path == str(target)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(tiny_gguf.read_bytes()).digest()
    assert dialog.progress_bar.value() == dialog.progress_bar.maximum()
    assert "Downloaded and checked (sha256)" in dialog.status_label.text()
    assert any(e.stage == "download" and e.total == tiny_gguf.stat().st_size for e in seen)
    assert dialog.command_edit.text().startswith(f"medalpaca download {GGUF_REPO} --include")

    qtbot.waitUntil(lambda: any(m.path == path for m in manager.table_model.models()), timeout=JOB_MS)
    selected = manager.selected_model()
    assert selected is not None and selected.path == path and selected.kind == "gguf"


def test_cancel_keeps_the_partial_file_and_download_resumes(qtbot, hub, manager, tiny_llama_dir):
    dialog = manager.open_download_dialog(HF_REPO)
    assert dialog.repo_id() == HF_REPO
    check_size(qtbot, dialog)
    assert "model.safetensors" in dialog.selected_files()

    hub.stall_at = 200_000
    part_dir = repo_folder(HF_REPO) / ".download"
    with qtbot.waitSignal(dialog.runner.sig_finished, timeout=JOB_MS) as finished:
        dialog.download_button.click()
        qtbot.waitUntil(lambda: any(size >= 16 * 1024 for size in part_sizes(part_dir)), timeout=JOB_MS)
        qtbot.waitUntil(lambda: "%" in dialog.status_label.text(), timeout=JOB_MS)
        assert 0 < dialog.progress_bar.value() < dialog.progress_bar.maximum()
        dialog.cancel_button.click()
    assert finished.args[0].status == RunStatus.STOPPED
    assert "partial file is kept" in dialog.status_label.text()
    kept = max(part_sizes(part_dir))

    hub.reset_faults()
    with qtbot.waitSignal(dialog.sig_model_downloaded, timeout=JOB_MS) as blocker:
        dialog.download_button.click()
    assert [r.range for r in hub.range_requests("model.safetensors")] == [f"bytes={kept}-"]
    assert blocker.args[0] == str(repo_folder(HF_REPO))
    qtbot.waitUntil(lambda: any(m.name == "test-org--tiny-llama" for m in manager.table_model.models()),
                    timeout=JOB_MS)


def test_hub_error_is_shown_in_the_dialog(qtbot, hub, manager):
    dialog = manager.open_download_dialog("test-org/does-not-exist")
    with qtbot.waitSignal(dialog.runner.sig_finished, timeout=JOB_MS):
        dialog.check_button.click()
    assert "No model 'test-org/does-not-exist'" in dialog.status_label.text()
    assert not dialog.download_button.isEnabled()
    assert dialog.file_list.count() == 0


def test_gated_repo_links_its_page_and_says_to_set_a_token(qtbot, hub, manager, tiny_gguf):
    dialog = manager.open_download_dialog(GATED_REPO)
    check_size(qtbot, dialog)  # a gated repo's file list is public, as on the hub
    page = f"{hub.url}/{GATED_REPO}"
    shown = dialog.license_label.text()
    assert "This model is gated" in shown and f'<a href="{page}">' in shown and "hf auth login" in shown
    assert dialog.license_label.openExternalLinks()

    with qtbot.waitSignal(dialog.runner.sig_finished, timeout=JOB_MS):
        dialog.download_button.click()  # without a token the hub answers 401
    status = dialog.status_label.text()
    assert f"accept its license at {page}" in status and "HF_TOKEN" in status
    assert not (repo_folder(GATED_REPO) / tiny_gguf.name).exists()


def test_catalog_pick_fills_the_repo_and_estimate(qtbot, manager):
    manager.download_button.click()
    dialog = manager.download_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.catalog_list.count() >= 4
    assert dialog.select_catalog_entry("TheBloke/meditron-7B-GGUF")
    assert dialog.repo_id() == "TheBloke/meditron-7B-GGUF"
    assert "4.1 GB" in dialog.size_label.text() and "Llama 2" in dialog.license_label.text()
    assert dialog.check_button.isEnabled() and not dialog.download_button.isEnabled()
    dialog.repo_edit.setText("not a repo")
    assert not dialog.check_button.isEnabled()
    assert manager.download_button.text() == "Download…"
    assert manager.open_download_dialog() is dialog  # one dialog, raised again
    assert sys.executable  # the worker is this interpreter: `python -m medalpaca_desktop download`
    item = dialog.catalog_list.item(0)
    assert item.toolTip() and "License" in item.toolTip()
    assert dialog.catalog_list.item(0).flags() & Qt.ItemFlag.ItemIsSelectable
