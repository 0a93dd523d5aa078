"""SIGKILL at seeded random moments, then resume or retry (issue 13): nothing committed lost,
nothing scored twice, no half-written file taken for a finished one, leftovers cleaned on the next start.

Every worker runs as a real subprocess (the trainer, the benchmark, the exporter, the chat
host) on the tiny models; its stdout events are read on a thread, and the kill lands when
a seeded condition holds (after N events, a random delay, or the moment a temp file or
folder appears on disk: inside a save). Each wait has a timeout; stragglers are killed.
Kill points per test: trainer 5 (+5 leftovers made by hand), benchmark 4 (+1 by hand), export 5,
chat host 3; each test asserts how many it tried.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import test_bench_run
import test_chat_session
from test_bench_run import config as bench_config
from test_bench_run import medqa_ids
from test_train_run import make_config, write_records

from medalpaca_desktop.core.events import Event, parse_line

ROOT = Path(__file__).resolve().parents[1]
SEED = 13
WAIT_S = 240  # the most any one process may take on a busy 2-core machine
tiny_long = test_bench_run.tiny_long  # the benchmark tests' fixture: the tiny LLaMA with a 2048 context
make_session = test_chat_session.make_session  # ChatSessions shut down at the end of a test


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, MEDALPACA_DESKTOP_HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


class Job:
    """A worker subprocess in its own process group; its stdout events collected on a thread."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                         cwd=cwd, env=env, start_new_session=True)
        self.events: list[Event] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = parse_line(line)
            if event is not None:
                self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        return [e for e in list(self.events) if e.type == kind]

    def wait_until(self, condition: Callable[[Job], bool], timeout: float = WAIT_S, poll: float = 0.002) -> bool:
        """True once `condition(self)` holds; False when the process ended first. Fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return True
            if self.proc.poll() is not None:
                self._reader.join(10)
                return condition(self)
            time.sleep(poll)
        raise AssertionError(f"timed out after {timeout} s; stderr: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self._reader.join(10)

    def finish(self, timeout: float = WAIT_S) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"did not finish in {timeout} s; stderr: {self.log.read_text()[-2000:]}") from None
        self._reader.join(10)
        return rc


class Jobs:
    """Every Job a test started; whatever still runs at the end is killed."""

    def __init__(self) -> None:
        self.started: list[Job] = []

    def start(self, *args, **kwargs) -> Job:
        job = Job(*args, **kwargs)
        self.started.append(job)
        return job

    def kill_all(self) -> None:
        for job in self.started:
            if job.proc.poll() is None:
                job.kill()


@pytest.fixture
def jobs():
    started = Jobs()
    yield started
    started.kill_all()


# --------------------------------------------------------------------------- trainer


def _checkpoint_is_whole(folder: Path) -> None:
    """What a resume reads from a checkpoint, read back."""
    import torch
    from safetensors.torch import load_file

    json.loads((folder / "trainer_state.json").read_text())
    assert load_file(str(folder / "adapter_model.safetensors"))
    torch.load(folder / "optimizer.pt", weights_only=True)
    torch.load(folder / "scheduler.pt", weights_only=True)


def _steps_of(ckpt_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in ckpt_dir.glob("checkpoint-*")) if ckpt_dir.is_dir() else []


@pytest.mark.slow
def test_trainer_killed_at_random_moments_resumes_to_the_same_adapter(tiny_llama_dir, tmp_path, jobs, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from medalpaca_desktop.core.store import Store
    from trainer.model_files import verify_saved

    rng = random.Random(SEED)
    data = write_records(tmp_path)
    common = dict(max_steps=10, save_steps=2, lora_dropout=0.1, warmup_steps=2)
    home = tmp_path / "home"
    env = _env(home)

    def start(run_dir: Path, resume: bool) -> Job:
        path = tmp_path / f"{run_dir.name}.yaml"
        make_config(tiny_llama_dir, run_dir, data, **common).save(path)
        cmd = [sys.executable, "-m", "trainer", "run", str(path)] + (["--resume"] if resume else [])
        return jobs.start(cmd, tmp_path, env, tmp_path / f"{run_dir.name}.stderr")

    straight = tmp_path / "straight"
    assert start(straight, False).finish() == 0

    run_dir = tmp_path / "killed"
    ckpt_dir = run_dir / "checkpoints"
    staging, final_tmp = ckpt_dir / ".staging", run_dir / ".final-tmp"

    def train_step(job: Job) -> int:
        return max((e.current or 0 for e in job.of("progress") if e.stage == "train"), default=0)

    def started_at(job: Job) -> float | None:
        return job.__dict__.setdefault("t_started", time.monotonic()) if job.of("started") else None

    def leftovers_now() -> bool:
        return bool(staging.exists() or final_tmp.exists() or list(ckpt_dir.glob(".*-old"))
                    or list(run_dir.glob(".*-old")))

    def saving(folder: Path, job: Job, min_step: int = 0) -> bool:  # started: the start-up cleanup is over
        return bool(job.of("started")) and train_step(job) >= min_step and folder.is_dir()

    delay, k, late = rng.uniform(0.0, 2.0), rng.randint(1, 3), rng.choice([4, 6])
    points: list[tuple[str, Callable[[Job], bool]]] = [
        ("after a few steps", lambda job: train_step(job) >= k),
        ("inside a checkpoint save", lambda job: saving(staging, job)),
        ("a random delay into training", lambda job: (t := started_at(job)) is not None
         and time.monotonic() - t >= delay),
        ("inside a later checkpoint save", lambda job: saving(staging, job, late)),
        ("inside the final save", lambda job: saving(final_tmp, job)),
    ]
    last_step, leftovers, tried = 0, False, 0
    for what, condition in points:
        job = start(run_dir, resume=tried > 0)
        hit = job.wait_until(condition)
        job.kill()
        if job.of("started") and tried:
            resumed = job.of("started")[0].info["resume_from"]
            assert resumed is None if not last_step else resumed.endswith(f"checkpoint-{last_step}"), what
            assert bool([e for e in job.of("log") if e.message.startswith("Cleaned up")]) == leftovers, what
        tried += 1
        if not hit:  # the run finished before this point came: nothing to resume any more
            break
        steps = _steps_of(ckpt_dir)
        for step in steps:  # a checkpoint under its final name is always complete
            _checkpoint_is_whole(ckpt_dir / f"checkpoint-{step}")
        assert not steps or steps[-1] >= last_step  # nothing committed was lost
        last_step = steps[-1] if steps else 0
        leftovers = leftovers_now()
        print(f"trainer killed {what}: checkpoints {steps}, leftovers {leftovers}")
        if (run_dir / "final").exists():
            verify_saved(run_dir / "final", adapter=True)
    assert tried >= 4

    job = start(run_dir, resume=True)
    assert job.finish() == 0, job.log.read_text()[-3000:]
    assert job.events[-1].type == "done" and job.events[-1].ok
    assert bool([e for e in job.of("log") if e.message.startswith("Cleaned up")]) == leftovers
    assert not staging.exists() and not final_tmp.exists() and not list(run_dir.glob(".*-old"))
    a = load_file(str(straight / "final" / "adapter_model.safetensors"))
    b = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical
    monkeypatch.setenv("MEDALPACA_DESKTOP_HOME", str(home))
    with Store() as store:  # one row for the run, however often it was killed, and it ends done
        rows = [r for r in store.training_runs() if r["run_dir"] == str(run_dir.resolve())]
    assert [(r["status"], r["pid"]) for r in rows] == [("done", None)]


def test_a_run_start_cleans_what_a_killed_save_left(tiny_llama_dir, tmp_path):
    """The leftovers of a kill inside each save, made by hand: removed or put back before the resume."""
    from test_train_run import run

    data = write_records(tmp_path)
    cfg = make_config(tiny_llama_dir, tmp_path / "run", data, max_steps=2, save_steps=1)
    rc, _ = run(cfg)
    assert rc == 0
    run_dir, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints"
    (ckpt / ".staging" / "checkpoint-3").mkdir(parents=True)  # killed while writing a checkpoint
    (ckpt / ".staging" / "checkpoint-3" / "optimizer.pt").write_bytes(b"\0" * 10)
    (run_dir / ".final-tmp").mkdir()  # killed while writing the final model
    os.replace(ckpt / "checkpoint-2", ckpt / ".checkpoint-2-old")  # killed between replace_folder's renames
    (run_dir / ".final-old").mkdir()  # killed before replace_folder removed the old copy
    (run_dir / ".merged-tmp-99999").mkdir()  # killed while merging the adapter after training
    (run_dir / ".merge-for-gguf-x1y2" / "merged").mkdir(parents=True)  # ... or merging it for the GGUF

    rc, rec = run(cfg, resume=True)
    assert rc == 0
    notes = [e.message for e in rec.of("log") if e.message.startswith("Cleaned up")]
    assert len(notes) == 6, notes
    assert rec.of("started")[0].info["resume_from"].endswith("checkpoint-2")  # the put-back checkpoint is used
    assert not (ckpt / ".staging").exists() and not (run_dir / ".final-tmp").exists()
    assert not list(ckpt.glob(".*")) and not list(run_dir.glob(".*"))


# --------------------------------------------------------------------------- benchmark


def _bench_scores(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {k: summary.get(k) for k in ("scores", "scores_norm", "scores_by_rule", "n_scored", "n_total", "complete")}


def test_benchmark_killed_at_random_moments_resumes_without_repeats(tiny_long, tmp_path, jobs, monkeypatch):
    from medalpaca_desktop.core.store import Store

    rng = random.Random(SEED)
    home = tmp_path / "home"
    env = _env(home)
    n = 8

    def start(out: Path, resume: bool) -> Job:
        path = tmp_path / f"{out.name}.yaml"
        bench_config(tiny_long.llamacpp, out, limit=n, max_new_tokens=16).save(path)
        cmd = [sys.executable, "-m", "bench", "run", str(path), "--jsonl"] + (["--resume"] if resume else [])
        return jobs.start(cmd, tmp_path, env, tmp_path / f"{out.name}.stderr")

    straight = tmp_path / "straight"
    assert start(straight, False).finish() == 0

    out = tmp_path / "killed"
    items_path = out / "items.jsonl"

    def results(job: Job) -> int:
        return len(job.of("result"))

    def after_result_then(delay: float) -> Callable[[Job], bool]:
        """`delay` s after this session's first result: usually in the middle of the next question; at the
        latest once one question is left, so a fast machine does not finish the run first."""
        def condition(job: Job) -> bool:
            if not results(job):
                return False
            t = job.__dict__.setdefault("t_result", time.monotonic())
            return time.monotonic() - t >= delay or results(job) >= n - 1 - job.__dict__.get("resumed_with", 0)
        return condition

    k1 = rng.randint(1, 3)
    points: list[tuple[str, Callable[[Job], bool], bool]] = [
        ("while the model loads", lambda job: bool(job.of("started")), False),
        (f"right after result {k1}", lambda job: results(job) >= k1, False),
        ("a random delay after a result", after_result_then(rng.uniform(0.0, 0.3)), False),
        ("right after a result, with a torn line", lambda job: results(job) >= 1, True),
    ]
    tried = 0
    for what, condition, tear in points:
        job = start(out, resume=tried > 0)
        before = items_path.read_text().splitlines() if items_path.is_file() else []
        job.__dict__["resumed_with"] = len(before)
        hit = job.wait_until(condition)
        job.kill()
        tried += 1
        print(f"benchmark killed {what}: hit {hit}, {len(job.of('result'))} results this session")
        if not hit:
            break
        lines = items_path.read_text().splitlines() if items_path.is_file() else []
        assert lines[:len(before)] == before, what  # nothing committed lost or rewritten
        ids = [json.loads(line)["id"] for line in lines]
        assert ids == medqa_ids(n)[:len(ids)], what  # each once, in dataset order
        if tear:  # what a kill in the middle of the append leaves
            with open(items_path, "a", encoding="utf-8") as fh:
                fh.write(lines[-1][:30] if lines else '{"id": "x')
    assert tried == 4

    job = start(out, resume=True)
    assert job.finish() == 0, job.log.read_text()[-3000:]
    lines = items_path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == medqa_ids(n)
    assert [json.loads(line)["output"] for line in lines] == [
        json.loads(line)["output"] for line in (straight / "items.jsonl").read_text().splitlines()]
    assert _bench_scores(out) == _bench_scores(straight)
    monkeypatch.setenv("MEDALPACA_DESKTOP_HOME", str(home))
    with Store() as store:
        rows = [r for r in store.eval_runs() if r["run_dir"] == str(out.resolve())]
        assert [(r["status"], r["pid"], r["n_items"]) for r in rows] == [("done", None, n)]
        keys = [it["item_key"] for it in store.eval_items(rows[0]["id"])]
    assert sorted(keys) == sorted(medqa_ids(n))  # every item once: none lost between the two writes


def test_a_kill_between_items_jsonl_and_the_database_is_caught_up(tiny_long, tmp_path):
    """The kill that lands right after an item reached items.jsonl but before its database row."""
    from test_bench_run import run

    from medalpaca_desktop.core.store import Store

    cfg = bench_config(tiny_long.llamacpp, tmp_path / "run", limit=3, max_new_tokens=8)
    rc, _ = run(cfg, stop_after=2)
    assert rc == 130
    with Store() as store:
        (row,) = store.eval_runs()
        with store.transaction() as conn:
            conn.execute("DELETE FROM eval_items WHERE eval_run_id = ? AND item_key = ?", (row["id"], medqa_ids(3)[1]))
    rc, _ = run(cfg, resume=True)
    assert rc == 0
    with Store() as store:
        keys = [it["item_key"] for it in store.eval_items(row["id"])]
    assert sorted(keys) == sorted(medqa_ids(3))


# --------------------------------------------------------------------------- export


@pytest.mark.slow
def test_export_killed_at_random_moments_never_leaves_a_partial_file_under_the_name(tiny_llama_dir, tmp_path, jobs):
    rng = random.Random(SEED)
    env = _env(tmp_path / "home")

    def start(out: Path, quant: str, *extra: str) -> Job:
        cmd = [sys.executable, "-m", "medalpaca_desktop.cli", "export", "--model", str(tiny_llama_dir),
               "--out", str(out), "--quant", quant, "--jsonl", *extra]
        return jobs.start(cmd, tmp_path, env, tmp_path / f"{out.name}.stderr")

    from trainer.export import ExportConfig, export_gguf

    def export(out: Path, quant: str, force: bool = False) -> Path:  # in-process: the same function as the CLI
        return export_gguf(ExportConfig(model=tiny_llama_dir, out=out, quant=quant, overwrite=force))

    straight = {q: export(tmp_path / "straight" / f"m-{q}.gguf", q) for q in ("f16", "q8_0")}
    out_dir = tmp_path / "models"
    out_dir.mkdir()

    def partial_bytes(out: Path) -> int:
        return max((p.stat().st_size for p in out_dir.glob(f".{out.name}.*.partial") if p.exists()), default=-1)

    size = straight["f16"].stat().st_size
    at, delay = rng.randint(1, size - 1), rng.uniform(0.0, 1.5)

    def since_start(job: Job) -> float:
        return time.monotonic() - job.__dict__.setdefault("t0", time.monotonic())
    points: list[tuple[str, str, Callable[[Job, Path], bool], bool]] = [
        ("as the temp file appears", "f16", lambda job, out: partial_bytes(out) >= 0, False),
        ("part way through the tensors", "f16",
         lambda job, out: partial_bytes(out) >= at, False),
        ("while quantizing", "q8_0",
         lambda job, out: any(e.stage.startswith("Quantizing") for e in job.of("progress")), False),
        ("a random delay in", "q8_0", lambda job, out: since_start(job) >= delay, False),
        ("over an older file (--force)", "f16", lambda job, out: partial_bytes(out) >= 0, True),
    ]
    tried, hits = 0, 0
    for what, quant, condition, force in points:
        out = out_dir / f"m-{quant}.gguf"
        old = None
        if force:
            old = straight["q8_0"].read_bytes()  # a finished file of another type already there
            out.write_bytes(old)
        job = start(out, quant, *(["--force"] if force else []))
        hit = job.wait_until(functools.partial(condition, out=out))
        job.kill()
        tried += 1
        print(f"export killed {what}: hit {hit}")
        if not hit:  # the export finished first: then the file is whole
            assert out.read_bytes() == straight[quant].read_bytes(), what
            out.unlink()
            continue
        if out.exists() and out.read_bytes() == straight[quant].read_bytes():
            out.unlink()  # it finished between the condition and the kill: then the file is whole
            continue
        hits += 1
        if old is None:
            assert not out.exists(), what  # never a partial file under the final name
        else:
            assert out.read_bytes() == old, what  # the previous good file intact
        # the retry: succeeds, writes the same bytes, and removes the dead export's temp file
        assert list(out_dir.glob(".*.partial")) or not force, what
        assert export(out, quant, force) == out
        assert out.read_bytes() == straight[quant].read_bytes(), what
        assert not list(out_dir.glob(".*.partial")), what
        out.unlink()
    assert tried == 5 and hits >= 3


# --------------------------------------------------------------------------- chat host


def test_chat_host_killed_at_random_moments_keeps_every_committed_message(qtbot, make_session, demo_gguf,
                                                                          tmp_path, monkeypatch):
    """Kill the host while it loads, a few tokens into an answer, and a random delay into one; after
    each a new host answers, and the database (read by a fresh connection) holds what the GUI shows."""
    from helpers.ui_support import isolate_user_home

    from medalpaca_desktop.core import paths
    from medalpaca_desktop.core.models import inspect_model
    from medalpaca_desktop.core.store import Store
    from medalpaca_desktop.ui.chat.conversation import STATUS_DONE, STATUS_FAILED, STATUS_INTERRUPTED
    from medalpaca_desktop.ui.chat.host_client import HostState

    isolate_user_home(tmp_path, monkeypatch)
    settings, wait = test_chat_session._settings, test_chat_session._wait
    ms = test_chat_session.ANSWER_MS
    rng = random.Random(SEED)
    session = make_session()
    seen = test_chat_session.Recorder(session)
    model = inspect_model(demo_gguf)
    conv = session.new_conversation()

    def tokens_then(n: int) -> Callable[[], bool]:
        return lambda: len(seen.text) >= n

    def delay_then(seconds: float) -> Callable[[], bool]:
        first: list[float] = []

        def condition() -> bool:
            if seen.text and not first:
                first.append(time.monotonic())
            return bool(first) and time.monotonic() - first[0] >= seconds
        return condition

    points = [("while the model loads", None), (f"{(n := rng.randint(2, 12))} tokens in", tokens_then(n)),
              ("a random delay into an answer", delay_then(rng.uniform(0.0, 0.5)))]
    hits = late = 0
    for i, (what, condition) in enumerate(points):
        seen.text.clear()
        assert session.send(conv, f"Question {i}: write a long essay about the history of medicine.", model,
                            settings(max_tokens=400, temperature=0.7))
        if condition is not None:
            qtbot.waitUntil(lambda c=condition: c() or session.answer is None, timeout=ms)
            if session.answer is None:  # the answer ended before this point came: nothing to kill
                assert conv.visible[-1].meta["status"] == STATUS_DONE, what
                continue
        pid = session.host.pid()
        assert pid, what
        os.kill(pid, signal.SIGKILL)
        wait(qtbot, session)
        answer = conv.visible[-1]
        print(f"chat host killed {what}: {len(answer.content)} characters kept")
        if condition is not None and answer.meta["status"] == STATUS_DONE:
            late += 1  # the answer ended between the check and the kill: it is whole, and saved as done
        else:
            hits += 1
            assert answer.meta["status"] == (STATUS_FAILED if condition is None else STATUS_INTERRUPTED), what
            assert condition is None or answer.content, what  # the partial answer is kept
            assert seen.errors()[-1][1], what  # a reload is offered
        session.load_model(model)  # a new host
        qtbot.waitUntil(lambda: session.host.state == HostState.READY, timeout=ms)
        assert session.send(conv, f"Answer {i} in one word.", model, settings(max_tokens=6))
        wait(qtbot, session)
        assert conv.visible[-1].meta["status"] == STATUS_DONE and conv.visible[-1].content, what
    assert hits >= 1 and hits + late >= 2

    shown = [(e.role, e.content, e.meta.get("status")) for e in conv.visible]
    assert len(shown) == 4 * (hits + late) + 2 * (len(points) - hits - late)
    with Store(paths.database_path()) as fresh:  # what a restarted app would read
        (chat,) = fresh.list_chats()
        saved = [(m.role, m.content, m.meta.get("status")) for m in fresh.messages(chat.id)]
    assert saved == shown
