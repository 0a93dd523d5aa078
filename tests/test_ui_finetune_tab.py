"""The Fine-tune tab with real trainer processes on the tiny LLaMA (CPU), offscreen.

Launch → points on the loss chart → stop (checkpoint) → resume → done; a crashed worker is
marked crashed and resumes; a finished run is redrawn from events.jsonl by a fresh tab; a run
left running is picked up by a fresh tab; a `medalpaca train` in a terminal is listed, also when
it finishes while the tab is open; without a usable database the runs of this session are still
listed; the main window opens the result in the chat tab and asks before closing over a running
fine-tune. Runs are a few steps with short examples.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.ui_support import NO_GPU_REPORT, fake_probe_command, isolate_user_home
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from medalpaca_desktop.core import paths
from medalpaca_desktop.core.events import Metric, read_events_file
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.store import Store, StoreError
from medalpaca_desktop.ui.devices import DeviceProbe
from medalpaca_desktop.ui.finetune.runs import attempt_summary, last_checkpoint, trainer_is_running
from medalpaca_desktop.ui.finetune.runs_table_model import COL_RUN, COL_STATUS
from medalpaca_desktop.ui.finetune.tab import FinetuneTab
from medalpaca_desktop.ui.jobs import DetachedJob, JobOutcome
from medalpaca_desktop.ui.main_window import TAB_CHAT, TAB_FINETUNE, MainWindow
from trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample_data" / "medical_instructions.jsonl"
PRESET = ROOT / "resources" / "presets" / "medalpaca-lora.yaml"
RUN_MS = 90_000  # one tiny run takes ~5 s alone; the suite may share 2 cores with other jobs


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the trainer shares 2 cores with the test process
    yield
    try:
        store = Store()
    except StoreError:  # a test that broke the database: its tab's fixture stopped its trainers
        return
    with store:  # no trainer outlives its test, whatever the test did
        for row in store.training_runs():
            kill_group(row["pid"])


def write_config(base: Path, run_dir: Path, **overrides) -> Path:
    """The paper's LoRA preset, shrunk to a few steps on the tiny model and the bundled sample data."""
    values = dict(base_model=str(base), data=[str(SAMPLE)], output_dir=str(run_dir), max_steps=4,
                  learning_rate=2e-3, global_batch_size=2, micro_batch_size=2, warmup_steps=1, max_length=384,
                  val_split=0.05, eval_steps=2, save_steps=2, lora_r=4, lora_alpha=8)
    values.update(overrides)
    config = TrainConfig.load(PRESET, [f"{k}={json.dumps(v)}" for k, v in values.items()])
    return config.save(run_dir / "config.yaml")


def set_max_steps(run_dir: Path, steps: int) -> None:
    path = run_dir / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data["max_steps"] = steps
    path.write_text(yaml.safe_dump(data))


def kill_group(pid: int | None) -> None:
    if pid and trainer_is_running(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def make_tab(qtbot):
    tabs: list[FinetuneTab] = []

    def make(open_own_store: bool = False) -> FinetuneTab:
        tab = FinetuneTab() if open_own_store else FinetuneTab(store=Store())
        qtbot.addWidget(tab)
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        pids = [s.pid() for s in tab.jobs.values() if s.is_running()]
        tab.shutdown()
        for pid in pids:
            kill_group(pid)


def loss_steps(tab: FinetuneTab) -> list[float]:
    return [x for x, _ in tab.monitor.loss_chart.drawn_points("loss")]


def listed(tab: FinetuneTab) -> list[tuple[str, str]]:
    """(name, status) of every row of the runs table, as a person reads them."""
    model = tab.table_model
    return [(model.data(model.index(i, COL_RUN)), model.data(model.index(i, COL_STATUS)))
            for i in range(model.rowCount())]


def terminal_train(config: Path, logs: Path) -> subprocess.Popen:
    """`medalpaca train CFG` as a person runs it in a terminal, in this test's home (the tab's database)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(logs / "stdout.txt", "w") as out, open(logs / "stderr.txt", "w") as err:
        return subprocess.Popen([sys.executable, "-m", "medalpaca_desktop", "train", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=logs, env=env)


def wait_exit(qtbot, proc: subprocess.Popen, logs: Path) -> None:
    """Wait for a terminal run with the GUI's event loop running; it must succeed."""
    try:
        qtbot.waitUntil(lambda: proc.poll() is not None, timeout=RUN_MS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (logs / "stderr.txt").read_text()[-3000:]


def wait_finished(qtbot, job: DetachedJob) -> tuple[str, str]:
    """(status, the sentence the tab shows) once the current attempt has ended."""
    qtbot.waitUntil(lambda: job.outcome.finished, timeout=RUN_MS)
    return job.outcome.status.value, attempt_summary(job.outcome, [e for e in job.events if job.in_attempt(e)])


# --------------------------------------------------------------------------- pure parts


def test_how_an_attempt_ended_is_said_in_one_sentence():
    from medalpaca_desktop.core.events import Done

    done = Done(ok=True, data={"steps": 4, "train_loss": 1.5})
    assert attempt_summary(JobOutcome(status=RunStatus.DONE, done=done), [done]) == \
        "Finished after 4 steps. Final training loss 1.5000."
    stopped = Done(ok=False, stopped=True)
    assert attempt_summary(JobOutcome(status=RunStatus.STOPPED, done=stopped), [stopped]) == \
        "Stopped with a checkpoint; Resume continues from it."
    metric = Metric(step=7, values={"loss": 2.0})
    assert attempt_summary(JobOutcome(status=RunStatus.STOPPED), [metric]) == \
        "Stopped at step 7; Resume continues from the last saved checkpoint."
    failed = JobOutcome(status=RunStatus.FAILED, message="training data: bad.jsonl line 3: not JSON")
    assert attempt_summary(failed, []) == failed.message


def _trainer_like(qtbot, run_dir: Path, code: str) -> JobOutcome:
    job = DetachedJob(run_dir, marker="python", name="the trainer")
    with qtbot.waitSignal(job.sig_finished, timeout=RUN_MS) as blocker:
        job.start([sys.executable, "-c", code])
    return blocker.args[0]


def test_a_trainer_that_ends_without_done_failed_or_crashed(qtbot, tmp_path):
    """Exit 2 with its reason on the last log line is a refusal; a traceback and an odd exit, a crash."""
    outcome = _trainer_like(qtbot, tmp_path / "a", "import sys; print('error: max_steps: -1 is below the minimum 0',"
                                                   " file=sys.stderr); sys.exit(2)")
    assert (outcome.status, outcome.message) == (RunStatus.FAILED, "max_steps: -1 is below the minimum 0")
    outcome = _trainer_like(qtbot, tmp_path / "b", "import os, sys; print('Traceback (most recent call last):\\n"
                                                   "  boom', file=sys.stderr, flush=True); os._exit(139)")
    assert outcome.status == RunStatus.CRASHED and "exit code 139" in outcome.message and "boom" in outcome.message


def test_a_bad_config_is_refused_with_a_message(qtbot, make_tab, tmp_path):
    tab = make_tab()
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: lora\nmax_steps: -1\n")
    assert tab.launch(str(bad)) is None
    assert tab.error_bar.isVisibleTo(tab) and "The config cannot run" in tab.error_label.text()
    assert tab.table_model.rowCount() == 0 and tab.empty_label.isVisibleTo(tab)
    assert tab.stack.currentWidget() is tab.wizard  # no runs yet: the wizard is the start
    tab.stack.setCurrentWidget(tab.monitor)
    tab.show()
    qtbot.waitExposed(tab)
    tab.activateWindow()
    tab.table.setFocus()
    QTest.keyClick(tab.table, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    if tab.isActiveWindow():  # offscreen windows are usually active; then the shortcut works end to end
        assert tab.stack.currentWidget() is tab.wizard


# --------------------------------------------------------------------------- real runs


def test_launch_stop_resume_done_and_redraw(qtbot, make_tab, tiny_llama_dir, tmp_path):
    tab = make_tab()
    run_dir = tmp_path / "run"
    config = write_config(tiny_llama_dir, run_dir, max_steps=100_000, save_steps=100_000, eval_steps=5)
    run_id = tab.launch(str(config))
    assert run_id is not None and tab.stack.currentWidget() is tab.monitor
    session = tab.jobs[run_id]
    assert tab.store.training_runs()[0]["status"] == "running" and tab.store.training_runs()[0]["pid"] == session.pid()
    # points arrive on the loss chart while the trainer runs
    qtbot.waitUntil(lambda: len(loss_steps(tab)) >= 3, timeout=RUN_MS)
    assert tab.monitor.stop_button.isEnabled() and not tab.monitor.resume_button.isEnabled()
    assert "step" in tab.monitor.progress.format() and "ETA" in tab.monitor.progress.format()

    qtbot.mouseClick(tab.monitor.stop_button, Qt.MouseButton.LeftButton)
    assert wait_finished(qtbot, session)[0] == "stopped"
    row = tab.store.training_runs()[0]
    assert row["status"] == "stopped" and row["pid"] is None and row["final_loss"] is not None
    step, folder = last_checkpoint(run_dir)
    assert (folder / "optimizer.pt").is_file()
    assert tab.monitor.resume_button.isEnabled() and tab.monitor.resume_button.text() == f"Resume from step {step}"
    assert "Stopped" in tab.monitor.banner.text()
    assert "step" in tab.monitor.progress.format() and "ETA" not in tab.monitor.progress.format()

    set_max_steps(run_dir, step + 3)  # the test's shortcut to an end; a user resumes the same config
    qtbot.mouseClick(tab.monitor.resume_button, Qt.MouseButton.LeftButton)
    assert session.is_running()
    status, message = wait_finished(qtbot, session)
    assert status == "done", message
    row = tab.store.training_runs()[0]
    assert row["status"] == "done" and row["error"] is None and row["finished_at"] >= row["started_at"]
    steps = loss_steps(tab)
    assert steps == sorted(set(steps)) and steps[-1] == step + 3  # resumed points continue the curve
    assert (run_dir / "final" / "adapter_config.json").is_file()
    assert tab.monitor.chat_button.isEnabled() and tab.monitor.export_button.isEnabled()
    assert tab.table_model.data(tab.table_model.index(0, 1)) == "done"
    with qtbot.waitSignal(tab.sig_chat_requested) as blocker:
        qtbot.mouseClick(tab.monitor.chat_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [str(run_dir / "final")]

    # a fresh tab (the next app start) redraws the finished run from its events.jsonl
    tab2 = make_tab()
    assert tab2.monitor.run_id() == run_id and not tab2.jobs
    metric_losses = [(e.step, e.values["loss"]) for e in read_events_file(run_dir / "events.jsonl")
                     if isinstance(e, Metric) and "loss" in e.values]
    assert tab2.monitor.loss_chart.drawn_points("loss") == [(float(s), pytest.approx(v)) for s, v in metric_losses]
    assert tab2.monitor.lr_chart.drawn_points("learning_rate")
    assert "checkpoint at step" in tab2.monitor.log_view.toPlainText()


def test_a_crashed_worker_is_crashed_and_resumes(qtbot, make_tab, tiny_llama_dir, tmp_path):
    tab = make_tab()
    saved = write_config(tiny_llama_dir, tmp_path / "elsewhere", max_steps=100_000, save_steps=2)
    run_id = tab.launch_saved_config(saved)  # "Run a saved config…": a fresh folder under the runs folder
    run_dir = Path(tab.store.training_runs()[0]["run_dir"])
    assert run_dir.parent == paths.runs_dir() and run_dir.name.endswith("-tiny_llama0-lora")
    assert TrainConfig.load(run_dir / "config.yaml").output_dir == str(run_dir)
    session = tab.jobs[run_id]
    qtbot.waitUntil(lambda: last_checkpoint(run_dir) is not None and len(loss_steps(tab)) >= 3, timeout=RUN_MS)
    os.kill(session.pid(), signal.SIGKILL)
    status, message = wait_finished(qtbot, session)
    assert status == "crashed" and "killed" in message
    row = tab.store.training_runs()[0]
    assert row["status"] == "crashed" and row["error"] == message  # the status column says it, not a prefix
    assert tab.monitor.banner.isVisibleTo(tab) and "The run crashed" in tab.monitor.banner.text()
    step, _ = last_checkpoint(run_dir)
    assert tab.monitor.resume_button.isEnabled() and f"step {step}" in tab.monitor.resume_button.text()
    assert tab.table_model.data(tab.table_model.index(0, 1)) == "crashed"
    assert tab.table_model.data(tab.table_model.index(0, 1), Qt.ItemDataRole.ToolTipRole) == message

    set_max_steps(run_dir, step + 2)
    assert tab.resume(run_id)
    status, message = wait_finished(qtbot, session)
    assert status == "done", message
    assert loss_steps(tab)[-1] == step + 2


def test_bad_data_fails_with_the_file_and_line(qtbot, make_tab, tiny_llama_dir, tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text(SAMPLE.read_text().splitlines()[0] + "\n{not json\n")
    tab = make_tab()
    tab.wizard.sig_launch_requested.emit(str(write_config(tiny_llama_dir, tmp_path / "run", data=[str(data)])))
    run_id = tab.store.training_runs()[0]["id"]
    status, message = wait_finished(qtbot, tab.jobs[run_id])
    assert status == "failed" and "broken.jsonl" in message and "2" in message
    assert message in tab.monitor.banner.text() or message.split(":")[0] in tab.monitor.banner.text()
    assert "[error]" in tab.monitor.log_view.toPlainText()


def test_a_dead_running_row_is_marked_crashed_on_start(qtbot, make_tab, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run_dir = tmp_path / "gone"
    run_dir.mkdir()
    (run_dir / "worker.log").write_text("Segmentation fault (core dumped)\n")
    with Store() as store:
        run_id = store.create_training_run("gone", str(run_dir), method="lora", base_model="/models/x",
                                           data=["a.jsonl"])
        store.update_training_run(run_id, status="running", pid=proc.pid, started_at=time.time() - 60)
    tab = make_tab()
    row = tab.store.training_runs()[0]
    assert row["status"] == "crashed" and "Segmentation fault" in row["error"]
    assert tab.monitor.resume_button.isEnabled() and tab.monitor.resume_button.text() == "Resume"


def test_without_a_database_the_runs_of_this_session_are_listed(qtbot, make_tab, tiny_llama_dir, tmp_path):
    """The database cannot be opened: the tab says so once, a fine-tune still starts, runs and is listed."""
    broken = paths.database_path()
    broken.write_bytes(b"this is not an SQLite database" * 100)
    tab = make_tab(open_own_store=True)
    assert "cannot be opened" in tab.store_error and not tab.store.persistent
    assert tab.store_label is not None and tab.store_label.isVisibleTo(tab)
    notice = tab.store_label.text()
    assert "Runs cannot be recorded:" in notice and str(broken) in notice and "this session only" in notice
    assert not tab.error_bar.isVisibleTo(tab)  # said once, in the notice

    run_id = tab.launch(str(write_config(tiny_llama_dir, tmp_path / "run", max_steps=2, val_split=0.0)))
    assert run_id is not None and not tab.error_bar.isVisibleTo(tab)
    assert listed(tab) == [("run", "running")]
    status, message = wait_finished(qtbot, tab.jobs[run_id])
    assert status == "done", message
    assert listed(tab) == [("run", "done")] and tab.monitor.run_id() == run_id
    assert tab.store.training_runs()[0]["final_loss"] is not None  # the tab wrote what the trainer could not
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()
    warnings = [e for e in tab.jobs[run_id].events if e.type == "warning" and "app database" in e.message]
    assert len(warnings) == 1  # the trainer could not record itself either, and said so once
    assert tab.store_label.isVisibleTo(tab)  # a successful launch does not hide it
    assert broken.read_bytes().startswith(b"this is not an SQLite database")  # left for the user to move


def test_a_run_from_the_terminal_is_listed_done(qtbot, make_tab, tiny_llama_dir, tmp_path):
    config = write_config(tiny_llama_dir, tmp_path / "terminal-run", max_steps=2, val_split=0.0)
    wait_exit(qtbot, terminal_train(config, tmp_path), tmp_path)
    tab = make_tab()
    assert listed(tab) == [("terminal-run", "done")]
    row = tab.store.training_runs()[0]
    assert row["run_dir"] == str((tmp_path / "terminal-run").resolve()) and row["final_loss"] is not None
    assert tab.monitor.run_id() == row["id"] and not tab.jobs  # shown, not followed: it has ended


def test_a_terminal_run_finished_while_the_tab_is_open_appears(qtbot, make_tab, tiny_llama_dir, tmp_path):
    """The shown tab rereads the list when another process wrote to the database; a hidden one does not tick."""
    tab = make_tab()
    tab.show()
    qtbot.waitExposed(tab)
    assert listed(tab) == [] and tab.empty_label.isVisibleTo(tab)
    config = write_config(tiny_llama_dir, tmp_path / "terminal-run", max_steps=2, val_split=0.0)
    wait_exit(qtbot, terminal_train(config, tmp_path), tmp_path)
    qtbot.waitUntil(lambda: listed(tab) == [("terminal-run", "done")], timeout=5000)
    assert tab.table.isVisibleTo(tab) and not tab.empty_label.isVisibleTo(tab)

    tab.hide()
    assert not tab._tick.isActive()  # nothing runs here: a hidden tab costs nothing
    with Store() as other:  # another writer (a terminal run starting) while the tab is hidden
        other.create_training_run("later", str(tmp_path / "later"), method="lora")
    tab.show()  # showing the tab rereads at once
    assert [name for name, _ in listed(tab)] == ["later", "terminal-run"]


# --------------------------------------------------------------------------- main window


def make_window(qtbot) -> MainWindow:
    probe = DeviceProbe(command=fake_probe_command(NO_GPU_REPORT))
    window = MainWindow(device_probe=probe)
    probe.setParent(window)
    qtbot.addWidget(window)
    return window


@pytest.fixture
def window(qtbot):
    window = make_window(qtbot)
    yield window
    pids = [s.pid() for s in window.finetune_tab.jobs.values() if s.is_running()]
    window.shutdown()
    for pid in pids:
        kill_group(pid)


def test_main_window_chats_with_the_result(qtbot, window, tiny_llama_dir, tmp_path):
    assert window.tabs.widget(TAB_FINETUNE) is window.finetune_tab
    run_dir = tmp_path / "run"
    run_id = window.finetune_tab.launch(str(write_config(tiny_llama_dir, run_dir, max_steps=2, val_split=0.0)))
    assert wait_finished(qtbot, window.finetune_tab.jobs[run_id])[0] == "done"
    with qtbot.waitSignal(window.chat_tab.session.host.sig_model_loaded, timeout=RUN_MS) as blocker:
        qtbot.mouseClick(window.finetune_tab.monitor.chat_button, Qt.MouseButton.LeftButton)
        assert window.tabs.currentIndex() == TAB_CHAT
    loaded = blocker.args[0]
    assert loaded.adapter == str(run_dir / "final") and Path(loaded.path) == tiny_llama_dir  # base + adapter
    picked = window.chat_tab.picker.current_model()
    assert picked.path == str(run_dir / "final") and picked.name == "run (final)"  # named after its run
    with qtbot.waitSignal(window.chat_tab.session.host.sig_generation_finished, timeout=RUN_MS):
        assert window.chat_tab.send("What is the antidote for paracetamol overdose?")
    assert window.chat_tab.session.host.loaded.adapter == str(run_dir / "final")  # answered without reloading


def test_closing_over_a_run_asks_and_a_run_left_running_is_picked_up(qtbot, window, tiny_llama_dir, tmp_path,
                                                                       monkeypatch):
    tab = window.finetune_tab
    run_id = tab.launch(str(write_config(tiny_llama_dir, tmp_path / "run", max_steps=100_000, save_steps=100_000)))
    session = tab.jobs[run_id]
    pid = session.pid()
    qtbot.waitUntil(lambda: len(loss_steps(tab)) >= 2, timeout=RUN_MS)
    answers = ["cancel", "leave"]
    asked: list[int] = []
    monkeypatch.setattr(MainWindow, "ask_about_active_runs", lambda self, count: asked.append(count) or answers.pop(0))
    window.show()
    assert not window.close() and window.isVisible() and session.is_running()  # cancel: nothing happens
    assert window.close() and not window.isVisible()  # leave running: it trains on without the window
    assert asked == [1, 1]
    assert trainer_is_running(pid) and tab.store.training_runs()[0]["status"] == "running"

    # the next start picks it up: its history from events.jsonl, then new points as they come
    window2 = make_window(qtbot)
    tab2 = window2.finetune_tab
    session2 = tab2.jobs[run_id]
    assert session2.is_running() and tab2.monitor.run_id() == run_id and tab2.monitor.stop_button.isEnabled()
    seen = len(loss_steps(tab2))
    assert seen >= 2
    qtbot.waitUntil(lambda: len(loss_steps(tab2)) > seen + 2, timeout=RUN_MS)
    # closing this window with "stop": the trainer saves a checkpoint and ends on its own
    answers.append("stop")
    window2.show()
    assert window2.close()
    qtbot.waitUntil(lambda: not trainer_is_running(pid), timeout=RUN_MS)
    tab3 = FinetuneTab(store=Store())  # and the start after that records how it ended
    qtbot.addWidget(tab3)
    row = tab3.store.training_runs()[0]
    assert row["status"] == "stopped" and last_checkpoint(tmp_path / "run") is not None
    assert tab3.monitor.resume_button.isEnabled()
    tab3.shutdown()
