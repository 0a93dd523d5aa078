"""core.worker.run_worker, the one start-up of every worker, and core.run_rows, the run rows workers keep.

The worker tests spawn a small script that runs a job through run_worker, the way
`python -m trainer run` or `python -m bench run` do, and look at its stdout, stderr and
exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from medalpaca_desktop.core.events import Done, Error, EventWriter, Warning, parse_line
from medalpaca_desktop.core.jobs import ExitCode, RunStatus
from medalpaca_desktop.core.run_rows import RunRow, status_of
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.core.worker import JOB_PID_ENV, TerminalWriter, Worker, job_pid, run_worker

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys, time
    from medalpaca_desktop.core.events import Done, Error, Started
    from medalpaca_desktop.core.jobs import ExitCode
    from medalpaca_desktop.core.worker import run_worker

    what = sys.argv[1]

    def job(worker):
        worker.emit(Started(job="test"))
        print("a library talking on stdout")
        sys.stdout.flush()
        if what == "ok":
            worker.emit(Done(ok=True))
            return ExitCode.OK
        if what == "bad":
            worker.emit(Error(message="the config names no model", kind="config"))
            worker.emit(Done(ok=False))
            return ExitCode.BAD_INPUT
        if what == "boom":
            raise RuntimeError("the tensor was empty\\nsecond line of detail")
        if what == "graceful":
            while not worker.stop.wait(0.05):
                pass
            worker.emit(Done(ok=False, stopped=True, data={"saved": True}))
            return ExitCode.STOPPED
        if what in ("stubborn", "interrupt"):
            while True:
                time.sleep(0.05)
        raise SystemExit(f"unknown {what}")

    raise SystemExit(run_worker(job, name="test", interrupt=what == "interrupt"))
""")


def _start(tmp_path: Path, what: str) -> subprocess.Popen[str]:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, str(script), what], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=env)


def _run(tmp_path: Path, what: str) -> tuple[int, list, str]:
    proc = _start(tmp_path, what)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, [parse_line(line) for line in out.splitlines()], err


def test_ok_exits_0_and_stdout_holds_only_events(tmp_path):
    rc, events, err = _run(tmp_path, "ok")
    assert rc == ExitCode.OK, err
    assert [e.type for e in events] == ["started", "done"]  # None would be a stray line
    assert "a library talking on stdout" in err


def test_bad_input_exits_2(tmp_path):
    rc, events, err = _run(tmp_path, "bad")
    assert rc == ExitCode.BAD_INPUT, err
    assert [e.type for e in events] == ["started", "error", "done"] and events[1].kind == "config"


def test_an_unexpected_exception_is_one_error_event_and_the_traceback_goes_to_stderr(tmp_path):
    rc, events, err = _run(tmp_path, "boom")
    assert rc == ExitCode.FAILED
    assert [e.type for e in events] == ["started", "error", "done"] and not events[-1].ok
    error = events[1]
    assert "\n" not in error.message and "RuntimeError: the tensor was empty" in error.message
    assert "Traceback" not in error.message and "second line" not in error.message
    assert error.kind == "internal" and "Traceback" in error.detail
    assert "Traceback (most recent call last)" in err and "second line of detail" in err


def _wait_for_started(proc: subprocess.Popen[str]) -> list:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    event = parse_line(line)
    assert event is not None and event.type == "started", line
    return [event]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_asks_the_job_to_stop_and_it_exits_130(tmp_path, signum):
    proc = _start(tmp_path, "graceful")
    events = _wait_for_started(proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    events += [parse_line(line) for line in out.splitlines()]
    assert proc.returncode == ExitCode.STOPPED, err
    assert [e.type for e in events] == ["started", "done"]
    assert events[-1].stopped and events[-1].data == {"saved": True}  # the job wound down itself


def test_a_second_signal_leaves_at_once_with_a_stopped_done(tmp_path):
    proc = _start(tmp_path, "stubborn")
    events = _wait_for_started(proc)
    proc.send_signal(signal.SIGINT)  # the job does not look at worker.stop
    time.sleep(0.5)  # two signals at once would be seen as one
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    events += [parse_line(line) for line in out.splitlines()]
    assert proc.returncode == ExitCode.STOPPED, err
    assert events[-1].type == "done" and events[-1].stopped and not events[-1].ok
    assert "Traceback" not in err


def test_interrupt_mode_stops_at_the_first_signal(tmp_path):
    proc = _start(tmp_path, "interrupt")
    _wait_for_started(proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.STOPPED, err
    assert [parse_line(line).type for line in out.splitlines()] == ["done"]


# ------------------------------------------------------------------ in-process


def test_a_given_writer_is_used_and_the_signal_handlers_are_put_back(capsys):
    before = signal.getsignal(signal.SIGINT)
    seen: list = []
    writer = EventWriter(None)
    writer.listen(seen.append)

    def job(worker: Worker) -> int:
        assert worker.writer is writer and not worker.stop.is_set()
        assert signal.getsignal(signal.SIGINT) is not before
        os.kill(os.getpid(), signal.SIGINT)  # the first signal only asks
        assert worker.stop.wait(5)
        worker.emit(Done(ok=True))
        return 0

    assert run_worker(job, name="test", writer=writer) is ExitCode.OK
    assert signal.getsignal(signal.SIGINT) is before
    assert [type(e) for e in seen] == [Done]


def test_terminal_writer_prints_errors_and_warnings_for_a_person(tmp_path, capsys):
    log = tmp_path / "events.jsonl"

    def job(worker: Worker) -> int:
        worker.emit(Warning(message="the disk is nearly full"))
        raise ValueError("no questions")

    assert run_worker(job, name="benchmark", writer=TerminalWriter("medalpaca bench", log)) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "medalpaca bench: warning: the disk is nearly full" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("medalpaca bench: error: The benchmark job failed unexpectedly (ValueError: no questions)")
    assert [e.type for e in map(parse_line, log.read_text().splitlines())] == ["warning", "error", "done"]


def test_job_pid_is_the_launchers_when_one_is_set(monkeypatch):
    monkeypatch.delenv(JOB_PID_ENV, raising=False)
    assert job_pid() == os.getpid()
    monkeypatch.setenv(JOB_PID_ENV, "4242")
    assert job_pid() == 4242


# ------------------------------------------------------------------ run rows


def test_status_of_an_exit_code():
    assert status_of(ExitCode.OK) is RunStatus.DONE
    assert status_of(ExitCode.STOPPED) is RunStatus.STOPPED
    assert {status_of(c) for c in (ExitCode.FAILED, ExitCode.BAD_INPUT, ExitCode.NOT_AVAILABLE)} == {RunStatus.FAILED}


def test_a_run_row_is_running_with_our_pid_then_final_without_it(tmp_path):
    warnings: list = []
    row = RunRow("training", warnings.append)
    row.open(lambda store: store.ensure_training_run("r", str(tmp_path / "r"), method="lora"))
    with Store() as store:
        (stored,) = store.training_runs()
        assert stored["status"] == "running" and stored["pid"] == os.getpid() and stored["started_at"]
    row.finish(RunStatus.DONE, final_loss=1.5)
    row.close()
    with Store() as store:
        (stored,) = store.training_runs()
        assert (stored["status"], stored["pid"], stored["final_loss"]) == ("done", None, 1.5)
        assert stored["finished_at"] >= stored["started_at"]
    assert warnings == []
    with pytest.raises(ValueError, match="crashed"):
        row.finish(RunStatus.CRASHED)


def test_a_database_that_cannot_be_opened_is_one_warning_and_the_run_goes_on(tmp_path):
    broken = tmp_path / "app.db"
    broken.write_bytes(b"this is not a database" * 100)
    warnings: list = []
    row = RunRow("eval", warnings.append, store_path=broken)
    row.open(lambda store: store.create_eval_run("e"))
    row.call(lambda store, run_id: store.add_eval_item(run_id, "q1"))
    row.finish(RunStatus.FAILED, error="x")
    row.close()
    assert len(warnings) == 1 and isinstance(warnings[0], Warning)
    assert "not recorded in the app database" in warnings[0].message and not row.active


def test_listeners_see_every_event_even_from_threads():
    seen: list = []
    writer = EventWriter(None)
    writer.listen(seen.append)
    threads = [threading.Thread(target=writer.emit, args=(Error(message=str(i)),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.message for e in seen) == [str(i) for i in range(8)]
