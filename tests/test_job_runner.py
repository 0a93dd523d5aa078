"""JobRunner against real child processes (tests/helpers/event_job.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medalpaca_desktop.core.events import Done, Progress, Started, Token
from medalpaca_desktop.ui.job_runner import JobOutcome, JobRunner, JobStatus

HELPER = str(Path(__file__).parent / "helpers" / "event_job.py")
TIMEOUT_MS = 20_000


@pytest.fixture
def runner(qtbot):
    job = JobRunner()
    yield job
    job.kill_now()


class Recorder:
    """Collects everything a JobRunner emits."""

    def __init__(self, job: JobRunner) -> None:
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


def run_to_end(qtbot, job: JobRunner, *args: str, **kwargs) -> JobOutcome:
    with qtbot.waitSignal(job.sig_finished, timeout=TIMEOUT_MS) as blocker:
        job.start(sys.executable, [HELPER, *args], **kwargs)
    outcome = blocker.args[0]
    assert outcome is job.outcome
    return outcome


def start_and_wait_started(qtbot, job: JobRunner, *args: str, **kwargs) -> None:
    with qtbot.waitSignal(job.sig_event_received, timeout=TIMEOUT_MS,
                          check_params_cb=lambda e: isinstance(e, Started)):
        job.start(sys.executable, [HELPER, *args], **kwargs)


def test_events_progress_and_garbage_lines(qtbot, runner):
    rec = Recorder(runner)
    outcome = run_to_end(qtbot, runner, "ok")
    assert outcome.status == JobStatus.SUCCEEDED and outcome.ok
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
    assert outcome.status == JobStatus.SUCCEEDED
    assert rec.tokens == [f"t{i} " for i in range(1000)]
    assert all(isinstance(e, Token) and e.request_id == "r1" for e in rec.events[1:-1])


def test_error_event_gives_failed_with_its_message(qtbot, runner):
    rec = Recorder(runner)
    outcome = run_to_end(qtbot, runner, "error")
    assert outcome.status == JobStatus.FAILED
    assert outcome.exit_code == 1
    assert outcome.error_message == "The model file is not a GGUF file."
    assert outcome.error_detail == "bad magic"
    assert len(rec.errors) == 1 and "not a GGUF file" in rec.errors[0]


def test_nonzero_exit_without_done_is_a_crash(qtbot, runner):
    rec = Recorder(runner)
    outcome = run_to_end(qtbot, runner, "crash_exit")
    assert outcome.status == JobStatus.CRASHED
    assert outcome.exit_code == 3
    assert "exit code 3" in outcome.error_message
    assert "about to fail hard" in outcome.stderr_tail
    assert len(rec.errors) == 1 and "about to fail hard" in rec.errors[0]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_killed_by_signal_is_a_crash(qtbot, runner):
    rec = Recorder(runner)
    outcome = run_to_end(qtbot, runner, "crash_kill")
    assert outcome.status == JobStatus.CRASHED
    assert outcome.exit_code is None
    assert "killed by a signal" in outcome.error_message
    assert "killing myself" in rec.errors[0]


def test_stop_asks_with_sigint_first(qtbot, runner):
    rec = Recorder(runner)
    start_and_wait_started(qtbot, runner, "graceful")
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS) as blocker:
        runner.stop(grace_s=10)
    outcome = blocker.args[0]
    assert outcome.status == JobStatus.STOPPED
    assert outcome.escalation is None  # asking was enough
    assert outcome.done is not None and outcome.done.stopped
    assert rec.errors == []


def test_stop_escalates_to_terminate(qtbot, runner):
    start_and_wait_started(qtbot, runner, "ignore_sigint")
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS) as blocker:
        runner.stop(grace_s=0.3, kill_grace_s=5)
    outcome = blocker.args[0]
    assert outcome.status == JobStatus.STOPPED
    assert outcome.escalation == "terminate"


def test_stop_escalates_to_kill(qtbot, runner):
    rec = Recorder(runner)
    start_and_wait_started(qtbot, runner, "ignore_all")
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS) as blocker:
        runner.stop(grace_s=0.3, kill_grace_s=0.3)
    outcome = blocker.args[0]
    assert outcome.status == JobStatus.STOPPED
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
    assert blocker.args[0].status == JobStatus.STOPPED
    assert blocker.args[0].escalation is None


def test_send_refused_when_job_takes_no_requests(qtbot, runner):
    start_and_wait_started(qtbot, runner, "ignore_sigint")
    assert runner.send({"type": "generate"}) is False
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS):
        runner.stop(grace_s=0.2)


def test_collects_plain_output_and_sets_offline_env(qtbot):
    job = JobRunner(collect_output=True)
    outcome = run_to_end(qtbot, job, "plain_output")
    assert outcome.status == JobStatus.SUCCEEDED
    import json
    assert json.loads(outcome.output) == {"answer": 42, "lines": ["a", "b"]}

    env_job = JobRunner(collect_output=True)
    with qtbot.waitSignal(env_job.sig_finished, timeout=TIMEOUT_MS) as blocker:
        env_job.start(sys.executable, ["-c", "import os; print(os.environ['HF_HUB_OFFLINE'], os.environ['EXTRA'])"],
                      env={"EXTRA": "yes"})
    assert blocker.args[0].output == "1 yes"


def test_program_that_does_not_exist_fails_cleanly(qtbot, runner):
    rec = Recorder(runner)
    with qtbot.waitSignal(runner.sig_finished, timeout=TIMEOUT_MS) as blocker:
        runner.start("/nonexistent/medalpaca-worker", [])
    outcome = blocker.args[0]
    assert outcome.status == JobStatus.FAILED
    assert "Could not start /nonexistent/medalpaca-worker" in outcome.error_message
    assert rec.errors
