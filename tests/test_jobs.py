"""PipeJob and DetachedJob against real child processes (tests/helpers/event_job.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medalpaca_desktop.core.events import Done, Progress, Started, Token
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.ui.jobs import DetachedJob, JobOutcome, PipeJob, pid_is_running

HELPER = str(Path(__file__).parent / "helpers" / "event_job.py")
TIMEOUT_MS = 20_000


@pytest.fixture
def runner(qtbot):
    job = PipeJob()
    yield job
    job.kill_now()


class Recorder:
    """Collects everything a PipeJob emits."""

    def __init__(self, job: PipeJob) -> None:
        self.events: list = []
        self.progress: list[Progress] = []
        self.tokens: list[str] = []
        self.logs: list[str] = []
        self.errors: list[str] = []
        job.sig_event_received.connect(self.events.append)
        job.sig_progress_changed.connect(self.progress.append)
        job.sig_token_received.connect(self.tokens.append)
        job.sig_log_line.connect(self.logs.append)
        job.sig_error_occurred.connect(self.errors.append)


def run_to_end(qtbot, job: PipeJob, *args: str, **kwargs) -> JobOutcome:
    with qtbot.waitSignal(job.sig_finished, timeout=TIMEOUT_MS) as blocker:
        job.start(sys.executable, [HELPER, *args], **kwargs)
    outcome = blocker.args[0]
    assert outcome is job.outcome
    return outcome


def start_and_wait_started(qtbot, job: PipeJob, *args: str, **kwargs) -> None:
    with qtbot.waitSignal(job.sig_event_received, timeout=TIMEOUT_MS,
                          check_params_cb=lambda e: isinstance(e, Started)):
        job.start(sys.executable, [HELPER, *args], **kwargs)


def test_events_progress_and_garbage_lines(qtbot, runner):
    rec = Recorder(runner)
    outcome = run_to_end(qtbot, runner, "ok")
    assert outcome.status == RunStatus.DONE and outcome.ok
    assert outcome.exit_code == 0
    assert [type(e).__name__ for e in rec.events] == ["Started", "Progress", "Progress", "Progress", "Done"]
    assert [p.current for p in rec.progress] == [1, 2, 3]
    assert isinstance(outcome.done, Done) and outcome.done.data == {"answer": 42}
    # Bad lines are logged, never fatal; the stray print went to stderr.
    assert "this is not json" in rec.logs
    assert "{broken json" in rec.logs
    assert "a stray print from a library" in rec.logs
    assert "a stray print from a library" in outcome.stderr_tail
    assert rec.errors == []


def test_thousand_tokens_arrive_intact_and_in_order(qtbot, runner):
    rec = Recorder(runner)
    outcome = run_to_end(qtbot, runner, "tokens", "1000")
    assert outcome.status == RunStatus.DONE
    assert rec.tokens == [f"t{i} " for i in range(1000)]
    assert all(isinstance(e, Token) and e.request_id == "r1" for e in rec.events[1:-1])


def test_error_event_gives_failed_with_its_message(qtbot, runner):
    rec = Recorder(runner)
    outcome = run_to_end(qtbot, runner, "error")
    assert outcome.status == RunStatus.FAILED
    assert outcome.exit_code == 1
    assert outcome.message == "The model file is not a GGUF file."
    assert outcome.detail == "bad magic"
    assert len(rec.errors) == 1 and "not a GGUF file" in rec.errors[0]


def test_nonzero_exit_without_done_is_a_crash(qtbot, runner):
    rec = Recorder(runner)
    outcome = run_to_end(qtbot, runner, "crash_exit")
    assert outcome.status == RunStatus.CRASHED
    assert outcome.exit_code == 7
    assert "exit code 7" in outcome.message
    assert "about to fail hard" in outcome.stderr_tail
    assert len(rec.errors) == 1 and "about to fail hard" in rec.errors[0]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_killed_by_signal_is_a_crash(qtbot, runner):
    rec = Recorder(runner)
    outcome = run_to_end(qtbot, runner, "crash_kill")
    assert outcome.status == RunStatus.CRASHED
    assert outcome.exit_code is None
    assert "killed by a signal" in outcome.message
    assert "killing myself" in rec.errors[0]


def test_stop_asks_with_sigint_first(qtbot, runner):
    rec = Recorder(runner)
    start_and_wait_started(qtbot, runner, "graceful")
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS) as blocker:
        runner.stop(grace_s=10)
    outcome = blocker.args[0]
    assert outcome.status == RunStatus.STOPPED
    assert outcome.escalation is None  # asking was enough
    assert outcome.done is not None and outcome.done.stopped
    assert rec.errors == []


def test_stop_escalates_to_terminate(qtbot, runner):
    start_and_wait_started(qtbot, runner, "ignore_sigint")
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS) as blocker:
        runner.stop(grace_s=0.3, kill_grace_s=5)
    outcome = blocker.args[0]
    assert outcome.status == RunStatus.STOPPED
    assert outcome.escalation == "terminate"


def test_stop_escalates_to_kill(qtbot, runner):
    rec = Recorder(runner)
    start_and_wait_started(qtbot, runner, "ignore_all")
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS) as blocker:
        runner.stop(grace_s=0.3, kill_grace_s=0.3)
    outcome = blocker.args[0]
    assert outcome.status == RunStatus.STOPPED
    assert outcome.escalation == "kill"
    assert any("killing pid" in line for line in rec.logs)


def test_requests_on_stdin(qtbot, runner):
    rec = Recorder(runner)
    start_and_wait_started(qtbot, runner, "requests", accepts_requests=True)
    with qtbot.waitSignal(runner.sig_token_received, timeout=TIMEOUT_MS):
        assert runner.send({"type": "generate", "prompt": "hello"})
    assert rec.tokens == ["echo:hello"]
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS) as blocker:
        runner.stop(grace_s=10)  # a job that reads requests is asked on stdin
    assert blocker.args[0].status == RunStatus.STOPPED
    assert blocker.args[0].escalation is None


def test_send_refused_when_job_takes_no_requests(qtbot, runner):
    start_and_wait_started(qtbot, runner, "ignore_sigint")
    assert runner.send({"type": "generate"}) is False
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS):
        runner.stop(grace_s=0.2)


def test_collects_plain_output_and_sets_offline_env(qtbot):
    job = PipeJob(collect_output=True)
    outcome = run_to_end(qtbot, job, "plain_output")
    assert outcome.status == RunStatus.DONE
    import json
    assert json.loads(outcome.output) == {"answer": 42, "lines": ["a", "b"]}

    env_job = PipeJob(collect_output=True)
    with qtbot.waitSignal(env_job.sig_finished, timeout=TIMEOUT_MS) as blocker:
        env_job.start(sys.executable, ["-c", "import os; print(os.environ['HF_HUB_OFFLINE'], os.environ['EXTRA'])"],
                      env={"EXTRA": "yes"})
    assert blocker.args[0].output == "1 yes"


def test_program_that_does_not_exist_fails_cleanly(qtbot, runner):
    rec = Recorder(runner)
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS) as blocker:
        runner.start("/nonexistent/medalpaca-worker", [])
    outcome = blocker.args[0]
    assert outcome.status == RunStatus.FAILED
    assert "Could not start /nonexistent/medalpaca-worker" in outcome.message
    assert rec.errors


def test_a_second_stop_escalates_at_once(qtbot, runner):
    start_and_wait_started(qtbot, runner, "ignore_all")
    runner.stop(grace_s=60, kill_grace_s=60)  # asking is ignored and the timers are far away
    assert runner.stopping
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS) as blocker:
        runner.stop()  # terminate now (ignored too)
        assert runner.outcome.escalation == "terminate"
        runner.stop()  # kill now
    assert blocker.args[0].status == RunStatus.STOPPED and blocker.args[0].escalation == "kill"


# --------------------------------------------------------------------------- detached


def detached_argv(mode: str) -> list[str]:
    return [sys.executable, HELPER, mode]


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.setenv("EVENT_JOB_LOG", str(folder / "events.jsonl"))  # the worker writes its events there
    return folder


@pytest.fixture
def detached(qtbot, run_dir):
    job = DetachedJob(run_dir, marker="event_job", name="the helper")
    yield job
    job.kill_now()


def wait_detached(qtbot, job: DetachedJob) -> JobOutcome:
    with qtbot.waitSignal(job.sig_finished, timeout=TIMEOUT_MS) as blocker:
        pass
    return blocker.args[0]


def test_detached_events_come_from_the_run_folder(qtbot, detached, run_dir):
    rec = Recorder(detached)
    with qtbot.waitSignal(detached.sig_finished, timeout=TIMEOUT_MS) as blocker:
        detached.start(detached_argv("ok"))
    outcome = blocker.args[0]
    assert outcome.status == RunStatus.DONE and outcome.exit_code == 0
    assert [type(e).__name__ for e in rec.events] == ["Started", "Progress", "Progress", "Progress", "Done"]
    assert outcome.done is not None and outcome.done.data == {"answer": 42}
    assert "a stray print from a library" in rec.logs  # stderr went to worker.log, and was read back
    assert "a stray print from a library" in (run_dir / "worker.log").read_text()


def test_detached_stop_asks_then_escalates_on_a_second_press(qtbot, detached):
    with qtbot.waitSignal(detached.sig_event_received, timeout=TIMEOUT_MS,
                          check_params_cb=lambda e: isinstance(e, Started)):
        detached.start(detached_argv("graceful"))
    with qtbot.waitSignal(detached.sig_finished, timeout=TIMEOUT_MS) as blocker:
        detached.stop(grace_s=30)
    assert blocker.args[0].status == RunStatus.STOPPED and blocker.args[0].escalation is None

    with qtbot.waitSignal(detached.sig_event_received, timeout=TIMEOUT_MS,
                          check_params_cb=lambda e: isinstance(e, Started) and e.job == "ignore_all"):
        detached.start(detached_argv("ignore_all"))
    assert detached.outcome.done is None  # the first attempt's done event is not this attempt's
    detached.stop(grace_s=60, kill_grace_s=60)
    detached.stop()
    detached.stop()
    outcome = wait_detached(qtbot, detached)
    assert outcome.status == RunStatus.STOPPED and outcome.escalation == "kill"


def test_detached_worker_killed_is_crashed(qtbot, detached):
    with qtbot.waitSignal(detached.sig_finished, timeout=TIMEOUT_MS) as blocker:
        detached.start(detached_argv("crash_kill"))
    outcome = blocker.args[0]
    assert outcome.status == RunStatus.CRASHED and "killed by a signal" in outcome.message
    assert "killing myself" in outcome.message


def test_detached_worker_outlives_its_follower_and_is_attached_again(qtbot, detached, run_dir):
    with qtbot.waitSignal(detached.sig_event_received, timeout=TIMEOUT_MS,
                          check_params_cb=lambda e: isinstance(e, Started)):
        detached.start(detached_argv("graceful"))
    pid, started_at = detached.pid(), detached.started_at
    detached.detach()  # the window closes; the worker does not
    assert not detached.is_running() and pid_is_running(pid, "event_job")
    assert not pid_is_running(pid, "no-such-program")  # a reused pid of another program is not ours

    again = DetachedJob(run_dir, marker="event_job")
    events: list = []
    again.sig_event_received.connect(events.append)
    again.attach(pid, started_at)
    assert again.is_running() and [type(e).__name__ for e in events] == ["Started"]
    with qtbot.waitSignal(again.sig_finished, timeout=TIMEOUT_MS) as blocker:
        again.stop(grace_s=30)
    outcome = blocker.args[0]
    assert outcome.status == RunStatus.STOPPED and outcome.exit_code is None  # not our child: no exit code
    assert outcome.done is not None and outcome.done.stopped


def test_attaching_to_a_dead_worker_without_done_is_crashed(qtbot, run_dir):
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (run_dir / "worker.log").write_text("Segmentation fault (core dumped)\n")
    job = DetachedJob(run_dir, marker="trainer", name="the trainer")
    with qtbot.waitSignal(job.sig_finished, timeout=TIMEOUT_MS) as blocker:
        job.attach(proc.pid, time.time() - 60)
    outcome = blocker.args[0]
    assert outcome.status == RunStatus.CRASHED
    assert outcome.message.startswith("The trainer ended before finishing") and "Segmentation fault" in outcome.message


def test_the_gui_writes_only_what_the_worker_could_not():
    from medalpaca_desktop.core.events import Done
    from medalpaca_desktop.ui.jobs import end_fields

    crashed = JobOutcome(status=RunStatus.CRASHED, message="The trainer was killed by a signal.")
    for row_status in ("running", "done", "stopped"):  # no done event: only the GUI can say it crashed
        fields = end_fields(row_status, crashed)
        assert fields["status"] == "crashed" and fields["error"] == crashed.message and fields["pid"] is None
    stopped = JobOutcome(status=RunStatus.STOPPED, done=Done(ok=False, stopped=True))
    assert end_fields("stopped", stopped) is None  # the worker recorded its own end
    fields = end_fields("running", stopped)  # a worker that does not write its row
    assert fields["status"] == "stopped" and fields["error"] is None
    failed = JobOutcome(status=RunStatus.FAILED, message="bad data", done=Done(ok=False))
    assert end_fields("failed", failed) is None and end_fields("running", failed)["error"] == "bad data"
