"""The benchmark job (bench/run.py) on the tiny real models, in-process.

Both modes on both backends, the log-likelihood fast path against the plain
per-option `score()`, the run directory and database rows, stop and resume at
both edges (no question skipped, none repeated), and clear errors for a bad
model or bad questions. The tiny LLaMA's fixture has a 256-token context, which
a MedAlpaca prompt overflows; `tiny_long` is the same shape with 2048 positions.
"""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.config import BenchConfig
from bench.run import run_job
from medalpaca_desktop.core.events import EventWriter
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.payloads import Item, parse_payload

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "resources" / "sample_questions"
MEDQA = SAMPLES / "medqa_sample.jsonl"
USMLE = SAMPLES / "usmle"
ITEM_KEYS = {"id", "step", "question", "options", "gold", "pred", "correct", "prompt", "output", "latency_s"}


@pytest.fixture(scope="session")
def tiny_long(tmp_path_factory) -> SimpleNamespace:
    """tiny_llama_dir's shape with room for a whole MedAlpaca prompt, as an HF folder and an f32 GGUF."""
    import model_factory

    from trainer.export import ExportConfig, export_gguf

    folder = model_factory.build_tiny_llama(tmp_path_factory.mktemp("tiny_long"), tokenizer="bpe",
                                            spec=model_factory.TinyLlamaSpec(max_position_embeddings=2048))
    gguf = export_gguf(ExportConfig(model=folder, out=tmp_path_factory.mktemp("tiny_long_gguf") / "t.gguf",
                                    quant="f32"))
    return SimpleNamespace(hf=folder, llamacpp=gguf)


class Recorder(EventWriter):
    """Keeps events; sets `stop` once `stop_after` items were scored (a user pressing Stop)."""

    def __init__(self, stop: threading.Event | None = None, stop_after: int | None = None) -> None:
        super().__init__(None)
        self.events: list = []
        self.stop, self.stop_after = stop, stop_after

    def emit(self, event) -> None:
        self.events.append(event)
        if self.stop is not None and len(self.of("result")) == self.stop_after:
            self.stop.set()

    def of(self, kind: str) -> list:
        return [e for e in self.events if e.type == kind]


def config(model: Path, out: Path, **kw) -> BenchConfig:
    values = dict(model=str(model), data=str(MEDQA), out=str(out), limit=5)
    values.update(kw)
    return BenchConfig(**values)


def run(cfg: BenchConfig, stop_after: int | None = None, **kw) -> tuple[int, Recorder]:
    stop = threading.Event()
    rec = Recorder(stop, stop_after)
    return run_job(cfg, writer=rec, stop=stop, **kw), rec


def items_in_file_order(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]


def items_of(out: Path) -> list[dict]:
    """items.jsonl in dataset order (the sample questions' ids are their positions); a batched
    log-likelihood run writes them longest prompt first."""
    return sorted(items_in_file_order(out), key=lambda it: (not it["id"].isdigit(), int(it["id"]) if it["id"].isdigit()
                                                           else 0, it["id"]))


def medqa_ids(limit: int) -> list[str]:
    from bench.datasets import load_dataset

    return [q.id for q in load_dataset(MEDQA, limit=limit).questions]


# ------------------------------------------------------------------ the log-likelihood fast path


def _requests(n: int) -> tuple[list, list]:
    """(single-token requests, multi-token requests) from the sample questions.

    The tiny tokenizer writes " A" and " C" as one token but " B" and " D" as two,
    so lm-eval's four options are a multi-token request here (on real vocabularies
    all four are single tokens).
    """
    from bench.datasets import load_dataset
    from bench.prompts import build_prompt

    qs = load_dataset(MEDQA, limit=n).questions
    lmeval = [build_prompt(q, "loglikelihood", "lm-eval") for q in qs]
    single = [(p.text, [" A", " C"]) for p in lmeval]
    multi = [(p.text, list(p.continuations.values())) for p in lmeval[:2]]
    multi.append((build_prompt(qs[0], "loglikelihood", "medalpaca").text,  # the answer written out
                  [f"{k}: {v}" for k, v in qs[0].options.items()]))
    multi.append(("The patient has a fever and ", ["chest pain.", "x", "a cough with a long tail of tokens"]))
    return single, multi


@pytest.mark.parametrize("backend", ["hf", "llamacpp"])
def test_fast_path_equals_plain_score(backend, tiny_long):
    from medalpaca_desktop.core.chat_protocol import LoadSpec
    from medalpaca_desktop.inference.base import create_backend

    b = create_backend(backend)
    b.load(LoadSpec(model=str(getattr(tiny_long, backend)), backend=backend), lambda *_: None)
    single, multi = _requests(6)
    assert {len(b.tokenize(ctx + " A")) - len(b.tokenize(ctx)) for ctx, _ in single} == {1}
    calls: list[int] = []
    if backend == "hf":  # count forward passes and their rows
        forward = b._model.forward
        b._model.forward = lambda *a, **k: (calls.append(k["input_ids"].shape[0]), forward(*a, **k))[1]
    else:  # count evaluations
        logits_for = b._logits_for
        b._logits_for = lambda *a, **k: (calls.append(1), logits_for(*a, **k))[1]
    fast_single = b.loglikelihood(single, lambda: False, max_rows=4)
    n_single, calls[:] = list(calls), []
    fast_multi = b.loglikelihood(multi, lambda: False, max_rows=4)
    n_multi = list(calls)
    plain = [b.score(ctx, conts, lambda: False) for ctx, conts in single + multi]
    for f, p in zip(fast_single + fast_multi, plain):
        assert f == pytest.approx(p, abs=1e-4)
    if backend == "hf":
        assert n_single == [4, 2]  # one pass per question, several questions per pass
        assert n_multi == [1, 4, 1, 4, 1, 4, 1, 3]  # the prompt once, then all options on its KV cache
    else:
        assert len(n_single) == 6  # one evaluation per question
        assert len(n_multi) == 4 + 4 + 4 + 3  # one per option, on the prompt kept in the KV cache
    b.unload()


def test_fast_path_truncates_like_lmeval(tiny_llama_dir):
    """A 256-token model: long prompts lose their start, the same way in both paths."""
    from medalpaca_desktop.core.chat_protocol import LoadSpec
    from medalpaca_desktop.inference.base import create_backend

    b = create_backend("hf")
    b.load(LoadSpec(model=str(tiny_llama_dir), backend="hf"), lambda *_: None)
    single, multi = _requests(4)
    reqs = single + multi
    assert max(len(b.tokenize(ctx)) for ctx, _ in reqs) > b.context_length
    for f, p in zip(b.loglikelihood(reqs, lambda: False), [b.score(c, o, lambda: False) for c, o in reqs]):
        assert f == pytest.approx(p, abs=1e-4)
    b.unload()


# ------------------------------------------------------------------ both modes, both backends


@pytest.mark.parametrize("backend", ["hf", "llamacpp"])
def test_generate_run_writes_everything(backend, tiny_long, tmp_path):
    from medalpaca_desktop.core.store import Store

    out = tmp_path / "run"
    rc, rec = run(config(getattr(tiny_long, backend), out, label="tiny", limit=4, max_new_tokens=24))
    assert rc == ExitCode.OK, [e.to_dict() for e in rec.of("error")]
    assert rec.events[0].type == "started" and rec.events[-1].type == "done" and rec.events[-1].ok
    info = rec.of("started")[0].info
    assert info["total"] == 4 and info["counts"]["all"] == 4 and info["label"] == "tiny"
    assert info["run_dir"] == str(out)
    assert any(e.stage == "load" for e in rec.of("progress"))
    evals = [e for e in rec.of("progress") if e.stage == "eval"]
    assert evals[-1].current == 4 and evals[-1].total == 4 and evals[-1].unit == "questions"
    assert set(evals[-1].extra) == {"accuracy", "correct", "step"} and "Step 1" in evals[-1].message
    assert [e.step for e in rec.of("metric")] == [1, 2, 3, 4]
    results = [e.data for e in rec.of("result")]
    assert [r["kind"] for r in results] == ["item"] * 4 and "prompt" not in results[0]

    items = items_of(out)
    assert [it["id"] for it in items] == medqa_ids(4)
    payloads = [parse_payload(r) for r in results]  # the GUI's reading of each item event: items.jsonl less the prompt
    assert all(isinstance(p, Item) and p.generated is not None and not p.extra for p in payloads)
    assert [p.to_data() for p in payloads] == [{"kind": "item", **{k: v for k, v in it.items() if k != "prompt"}}
                                               for it in items_in_file_order(out)]  # each as it was written
    for it in items:
        assert ITEM_KEYS | {"pred_paper", "pred_lenient", "seed", "tokens", "stop_reason"} <= set(it)
        assert it["prompt"].startswith("Below is an instruction") and it["prompt"].endswith("### Response:\n")
        assert it["output"] and 0 < it["tokens"] <= 24 + 3 and it["latency_s"] > 0  # llama.cpp ends a UTF-8 char
        assert it["pred"] == it["pred_paper"] and it["correct"] == (it["pred"] == it["gold"])
    assert [it["seed"] for it in items] == [42, 43, 44, 45]

    summary = json.loads((out / "summary.json").read_text())
    assert summary == rec.events[-1].data["summary"]
    assert (summary["mode"], summary["rule"], summary["prompt_style"], summary["label"]) == \
        ("generate", "paper", "medalpaca", "tiny")
    assert summary["complete"] and summary["n_total"] == 4 and summary["n_scored"] == 4
    overall = summary["scores"]["overall"]
    assert overall["n"] == 4 and overall["correct"] == sum(it["correct"] for it in items)
    assert overall["unparseable"] == len(summary["unparseable"])
    assert set(summary["scores_by_rule"]) == {"paper", "lenient"}
    record = summary["record"]
    assert record["sampling"] == {"greedy": False, "temperature": 0.1, "top_p": 0.75, "top_k": 40,
                                  "max_new_tokens": 24, "seed": 42, "seed_per_question": "seed + position"}
    assert record["backend"] == backend and record["template"] == "medalpaca"
    assert record["chat_template_applied"] is False and len(record["dataset_sha256"]) == 64
    assert record["model_size_bytes"] > 0 and record["library_versions"]["transformers"]
    assert record["app_version"] and record["started_at"] and record["finished_at"] and record["host"]["python"]
    with open(out / "items.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == medqa_ids(4) and rows[0]["output"] == items[0]["output"]
    assert list(rows[0])[:5] == ["id", "step", "gold", "pred", "correct"]
    assert BenchConfig.load(out / "config.yaml") == config(getattr(tiny_long, backend), out, label="tiny", limit=4,
                                                           max_new_tokens=24)

    with Store() as store:
        (row,) = store.eval_runs()
        assert (row["status"], row["n_items"], row["scoring"], row["model_label"]) == ("done", 4, "generate", "tiny")
        assert row["run_dir"] == str(out.resolve()) and row["accuracy"] == overall["accuracy"]
        db_items = sorted(store.eval_items(row["id"]), key=lambda r: int(r["item_key"]))  # in the order they ended
        assert [r["item_key"] for r in db_items] == medqa_ids(4)
        assert db_items[0]["raw_output"] == items[0]["output"] and db_items[0]["subset"] == "step1"
        assert json.loads(db_items[0]["meta_json"])["options"] == items[0]["options"]


@pytest.mark.parametrize("backend", ["hf", "llamacpp"])
def test_loglikelihood_run(backend, tiny_long, tmp_path):
    out = tmp_path / "run"
    rc, rec = run(config(getattr(tiny_long, backend), out, mode="loglikelihood", prompt_style="lm-eval",
                         batch_size=3, limit=7))
    assert rc == ExitCode.OK, [e.to_dict() for e in rec.of("error")]
    items = items_of(out)
    assert [it["id"] for it in items] == medqa_ids(7)
    if backend == "hf":  # scored longest prompt first, as lm-eval orders them: a batch holds one length
        lengths = [len(it["prompt"]) for it in items_in_file_order(out)]
        assert lengths[0] == max(lengths) and lengths[-1] == min(lengths)
    payloads = [parse_payload(e.data) for e in rec.of("result")]
    assert all(isinstance(p, Item) and p.option_scores is not None and p.generated is None for p in payloads)
    assert [p.option_scores.scores for p in payloads] == [it["scores"] for it in items_in_file_order(out)]
    for it in items:
        assert ITEM_KEYS | {"scores", "scores_norm", "pred_norm", "correct_norm"} <= set(it)
        assert set(it["scores"]) == set(it["options"]) and all(v < 0 for v in it["scores"].values())
        assert it["pred"] == max(it["scores"], key=it["scores"].get)
        assert it["scores_norm"] == it["scores"] and it["pred_norm"] == it["pred"]  # one-letter choices
        assert it["output"] == "" and it["prompt"].startswith("Question: ") and it["prompt"].endswith("\nAnswer:")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scores_norm"]["overall"] == summary["scores"]["overall"]
    assert summary["record"]["batch_size"] == 3 and summary["record"]["sampling"] is None
    assert summary["unparseable"] == []
    with open(out / "items.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7 and float(rows[0]["score_A"]) == pytest.approx(items[0]["scores"]["A"])
    assert {"score_D", "score_norm_A"} <= set(rows[0])


def test_both_backends_give_the_same_loglikelihoods(tiny_long, tmp_path):
    """The f32 GGUF is the HF model: the same prompt and options give the same numbers."""
    per_backend = {}
    for backend in ("hf", "llamacpp"):
        rc, _ = run(config(getattr(tiny_long, backend), tmp_path / backend, mode="loglikelihood",
                           prompt_style="lm-eval", limit=4))
        assert rc == ExitCode.OK
        per_backend[backend] = {it["id"]: it for it in items_of(tmp_path / backend)}
    assert set(per_backend["hf"]) == set(per_backend["llamacpp"])
    for key, a in per_backend["hf"].items():
        assert a["scores"] == pytest.approx(per_backend["llamacpp"][key]["scores"], abs=2e-3)


def test_chat_template_and_usmle_folder(tiny_long, tmp_path):
    out = tmp_path / "run"
    rc, rec = run(config(tiny_long.hf, out, data=str(USMLE), dataset="usmle", apply_chat_template=True,
                         greedy=True, max_new_tokens=8, limit=3))
    assert rc == ExitCode.OK, [e.to_dict() for e in rec.of("error")]
    items = items_of(out)
    assert all(it["prompt"].startswith("<|im_start|>user\nAnswer the multiple choice question") for it in items)
    assert all(it["step"] == "step1" for it in items) and all(it["tokens"] <= 8 for it in items)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["record"]["chat_template_applied"] is True and summary["record"]["template"] == "chat"
    assert summary["record"]["sampling"]["greedy"] is True
    assert summary["record"]["excluded_counts"]  # the sample folder has image questions, left out


def test_prompt_longer_than_the_context_is_an_item_error(tiny_llama_dir, tmp_path):
    rc, rec = run(config(tiny_llama_dir, tmp_path / "run", limit=2))
    assert rc == ExitCode.OK
    items = items_of(tmp_path / "run")
    assert all("context holds 256" in it["error"] and it["pred"] is None for it in items)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["unparseable"] == [it["id"] for it in items] and len(summary["errors"]) == 2


def test_the_row_is_running_with_our_pid_while_the_run_scores(tiny_long, tmp_path):
    """What the GUI follows a detached benchmark by: status running, the worker's pid, its start time."""
    import os

    from medalpaca_desktop.core.store import Store

    seen: list = []

    class Watcher(Recorder):
        def emit(self, event) -> None:
            super().emit(event)
            if event.type == "result" and not seen:
                with Store() as store:
                    seen.append(store.eval_runs()[0])

    out = tmp_path / "run"
    rc = run_job(config(tiny_long.llamacpp, out, limit=2, max_new_tokens=4), writer=Watcher())
    assert rc == ExitCode.OK
    (during,) = seen
    assert (during["status"], during["pid"], during["finished_at"]) == ("running", os.getpid(), None)
    with Store() as store:
        (after,) = store.eval_runs()
    assert (after["status"], after["pid"]) == ("done", None) and after["started_at"] == during["started_at"]


def test_a_database_that_cannot_be_opened_is_one_warning_and_the_run_finishes(tiny_long, tmp_path):
    """The run folder is the record, the database only its index: a broken database never fails a run."""
    from medalpaca_desktop.core import paths

    broken = paths.database_path()
    broken.write_bytes(b"this is not a database" * 100)
    out = tmp_path / "run"
    rc, rec = run(config(tiny_long.llamacpp, out, limit=2, max_new_tokens=4))
    assert rc == ExitCode.OK
    (warning,) = [w for w in rec.of("warning") if "app database" in w.message]
    assert "not recorded" in warning.message and "run folder" in warning.message
    assert rec.events[-1].type == "done" and rec.events[-1].ok and not rec.of("error")
    assert len(items_of(out)) == 2 and json.loads((out / "summary.json").read_text())["complete"]
    assert broken.read_bytes().startswith(b"this is not a database")  # left as it was


# ------------------------------------------------------------------ stop and resume


@pytest.mark.parametrize("stop_after", [1, 5])
def test_stop_then_resume_skips_and_repeats_nothing(stop_after, tiny_long, tmp_path):
    """Stopped after the first / the last-but-one question; the resumed run equals an uninterrupted one."""
    from medalpaca_desktop.core.store import Store

    cfg = config(tiny_long.llamacpp, tmp_path / "run", limit=6, max_new_tokens=16)
    rc, rec = run(cfg, stop_after=stop_after)
    assert rc == ExitCode.STOPPED
    done = rec.events[-1]
    assert done.type == "done" and done.stopped and not done.ok
    partial = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert partial["complete"] is False and partial["n_scored"] == stop_after and partial["n_total"] == 6
    first_lines = (tmp_path / "run" / "items.jsonl").read_text().splitlines()
    assert len(first_lines) == stop_after
    with Store() as store:
        stopped = store.eval_runs()[0]
        assert stopped["status"] == "stopped" and stopped["pid"] is None
        assert stopped["finished_at"] >= stopped["started_at"] > 0

    rc, rec = run(cfg, resume=True)
    assert rc == ExitCode.OK
    assert rec.of("started")[0].info["remaining"] == 6 - stop_after
    assert len(rec.of("result")) == 6 - stop_after
    lines = (tmp_path / "run" / "items.jsonl").read_text().splitlines()
    assert lines[:stop_after] == first_lines
    ids = [json.loads(line)["id"] for line in lines]
    assert ids == medqa_ids(6)  # none skipped, none repeated, dataset order
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["complete"] and summary["scores"]["overall"]["n"] == 6
    assert [s["resumed_with"] for s in summary["record"]["sessions"]] == [0, stop_after]
    with Store() as store:
        (row,) = store.eval_runs()
        assert row["status"] == "done" and len(store.eval_items(row["id"])) == 6

    # Seeds follow the question, not the session: the same answers as a run never stopped.
    rc, _ = run(config(tiny_long.llamacpp, tmp_path / "straight", limit=6, max_new_tokens=16))
    assert [it["output"] for it in items_of(tmp_path / "straight")] == [json.loads(x)["output"] for x in lines]


class StopMidAnswer(threading.Event):
    """A Stop pressed a few tokens into the answer after `after` results (the second question by default)."""

    def __init__(self, rec_holder: list, after: int = 1) -> None:
        super().__init__()
        self.rec_holder, self.polls, self.after = rec_holder, 0, after

    def is_set(self) -> bool:
        rec = self.rec_holder[0] if self.rec_holder else None
        if rec is not None and len(rec.of("result")) == self.after:
            self.polls += 1  # the first poll is the loop's before the question; the rest are per token
            if self.polls > 3:
                self.set()
        return super().is_set()


@pytest.mark.parametrize("mode", ["generate", "loglikelihood"])
def test_stop_mid_question_records_nothing_half_done(mode, tiny_long, tmp_path):
    """A stop while a question is being answered/scored cuts it short; it is asked again on resume."""
    holder: list = []
    stop = StopMidAnswer(holder)
    rec = Recorder()
    holder.append(rec)
    cfg = config(tiny_long.llamacpp, tmp_path / "run", limit=3, max_new_tokens=32, mode=mode, batch_size=1)
    assert run_job(cfg, writer=rec, stop=stop) == ExitCode.STOPPED
    assert stop.polls > 1 or mode == "loglikelihood"
    assert len(items_of(tmp_path / "run")) == 1
    partial = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert partial["complete"] is False and partial["n_scored"] == 1
    rc, rec = run(cfg, resume=True)
    assert rc == ExitCode.OK and len(rec.of("result")) == 2
    rc, _ = run(config(tiny_long.llamacpp, tmp_path / "straight", limit=3, max_new_tokens=32, mode=mode,
                       batch_size=1))
    key = "output" if mode == "generate" else "scores"
    assert [it[key] for it in items_of(tmp_path / "run")] == [it[key] for it in items_of(tmp_path / "straight")]


def test_batched_answers_equal_one_at_a_time_also_after_a_stop_mid_batch(tiny_long, tmp_path):
    """transformers answers 3 questions per call with the paper's sampling; each keeps its own seed."""
    def outputs(out: Path) -> dict[str, str]:
        return {it["id"]: it["output"] for it in items_of(out)}

    rc, _ = run(config(tiny_long.hf, tmp_path / "one", limit=7, max_new_tokens=12, batch_size=1))
    assert rc == ExitCode.OK
    holder: list = []
    stop = StopMidAnswer(holder, after=3)  # a few tokens into the second batch
    rec = Recorder()
    holder.append(rec)
    cfg = config(tiny_long.hf, tmp_path / "batched", limit=7, max_new_tokens=12, batch_size=3)
    assert run_job(cfg, writer=rec, stop=stop) == ExitCode.STOPPED
    assert 3 <= len(items_of(tmp_path / "batched")) < 6
    rc, rec = run(cfg, resume=True)
    assert rc == ExitCode.OK
    assert sorted(it["id"] for it in items_of(tmp_path / "batched")) == sorted(medqa_ids(7))
    assert outputs(tmp_path / "batched") == outputs(tmp_path / "one")
    assert len(set(outputs(tmp_path / "one").values())) > 1


def test_questions_enter_longest_prompt_first_and_are_saved_as_they_end(tiny_long, tmp_path):
    """transformers, generate mode: questions enter the slots longest prompt first (as lm-eval's generate_until
    orders them, so rows entering together pad little) and each item is written as its answer ends;
    items.csv keeps dataset order and the answers equal one-at-a-time answers."""
    from transformers import AutoTokenizer

    from bench.datasets import load_dataset
    from bench.prompts import build_prompt

    tok = AutoTokenizer.from_pretrained(tiny_long.hf)
    qs = load_dataset(MEDQA, limit=7).questions
    lengths = [len(tok(build_prompt(q, "generate", "lm-eval").text)["input_ids"]) for q in qs]
    order = [qs[i].id for i in sorted(range(7), key=lambda i: (-lengths[i], i))]
    assert order != medqa_ids(7)  # the sample's lengths are not in file order, so the order shows
    kw = dict(prompt_style="lm-eval", greedy=True, limit=7)
    rc, rec = run(config(tiny_long.hf, tmp_path / "batched", batch_size=3, max_new_tokens=6, **kw))
    assert rc == ExitCode.OK
    written = [it["id"] for it in items_in_file_order(tmp_path / "batched")]
    assert [e.data["id"] for e in rec.of("result")] == written
    assert all(it["tokens"] == 6 for it in items_in_file_order(tmp_path / "batched"))  # no early end here, so
    assert written == order  # rows of one length end in the order they entered: the longest prompts first
    with open(tmp_path / "batched" / "items.csv", newline="", encoding="utf-8") as fh:
        assert [r["id"] for r in csv.DictReader(fh)] == medqa_ids(7)
    assert {it["id"]: it["seed"] for it in items_of(tmp_path / "batched")} == {i: 42 + int(i) for i in medqa_ids(7)}
    rc, _ = run(config(tiny_long.hf, tmp_path / "one", batch_size=1, max_new_tokens=6, **kw))
    assert rc == ExitCode.OK and [it["id"] for it in items_in_file_order(tmp_path / "one")] == medqa_ids(7)
    one = {it["id"]: it["output"] for it in items_of(tmp_path / "one")}
    assert {it["id"]: it["output"] for it in items_of(tmp_path / "batched")} == one


def test_a_failure_saving_an_item_stops_the_generation_with_its_own_message(tiny_long, tmp_path, monkeypatch):
    """A full disk while an item is written is that error (not 'generation failed'), after the items before it."""
    from bench import run as bench_run

    real = bench_run.results.item_line
    written: list[str] = []

    def item_line(item):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(item["id"])
        return real(item)

    monkeypatch.setattr(bench_run.results, "item_line", item_line)
    rc, rec = run(config(tiny_long.hf, tmp_path / "run", batch_size=3, max_new_tokens=6, limit=7))
    assert rc != ExitCode.OK
    message = rec.of("error")[0].message
    assert message.startswith("The disk is full") and "every question scored so far is kept" in message
    assert [it["id"] for it in items_in_file_order(tmp_path / "run")] == written


def test_torn_line_and_finished_run(tiny_long, tmp_path):
    out = tmp_path / "run"
    cfg = config(tiny_long.hf, out, mode="loglikelihood", prompt_style="lm-eval", limit=4)
    assert run(cfg)[0] == ExitCode.OK
    path = out / "items.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    torn = json.loads(lines[3])["id"]  # the fourth scored
    path.write_text("".join(lines[:3]) + lines[3][:40])  # killed while writing the 4th row
    rc, rec = run(cfg)  # an out folder with items.jsonl resumes by itself
    assert rc == ExitCode.OK and [e.data["id"] for e in rec.of("result")] == [torn]
    assert path.read_text().splitlines(keepends=True)[:3] == lines[:3]
    assert sorted(it["id"] for it in items_of(out)) == sorted(medqa_ids(4))
    # Nothing left: no model is loaded, the summary is rewritten, exit 0.
    rc, rec = run(cfg, resume=True)
    assert rc == ExitCode.OK and rec.of("result") == [] and not any(e.stage == "load" for e in rec.of("progress"))
    assert json.loads((out / "summary.json").read_text())["complete"]
    # Another model into the same folder is refused, not mixed in.
    rc, rec = run(config(tiny_long.llamacpp, out, mode="loglikelihood", prompt_style="lm-eval", limit=4))
    assert rc == ExitCode.BAD_INPUT and "already holds a run with model" in rec.of("error")[0].message


# ------------------------------------------------------------------ bad input


def test_corrupt_models_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    rc, rec = run(config(bad, tmp_path / "r1"))
    (err,) = rec.of("error")
    assert rc == ExitCode.BAD_INPUT and err.kind == "model_corrupt" and "broken.gguf" in err.message
    assert rec.events[-1].type == "done" and not rec.events[-1].ok

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    rc, rec = run(config(folder, tmp_path / "r2"))
    (err,) = rec.of("error")
    assert rc == ExitCode.BAD_INPUT and err.kind.startswith("model_") and "Traceback" not in err.message


def test_malformed_questions_name_file_and_line(tiny_long, tmp_path):
    data = tmp_path / "q.jsonl"
    good = MEDQA.read_text().splitlines()[0]
    data.write_text(good + "\n{\"question\": \"no options\"}\n" + good.replace('"answer_idx": "B"', '"answer_idx": "Z"')
                    + "\n")
    rc, rec = run(config(tiny_long.llamacpp, tmp_path / "run", data=str(data)))
    (err,) = rec.of("error")
    assert rc == ExitCode.BAD_INPUT and err.kind == "dataset" and "q.jsonl line 2" in err.message
    assert not (tmp_path / "run" / "items.jsonl").exists()
    rc, rec = run(config(tiny_long.llamacpp, tmp_path / "run", data=str(data), skip_malformed=True,
                         mode="loglikelihood"))
    assert rc == ExitCode.OK and len(items_of(tmp_path / "run")) == 1
    assert any("Skipped 2 malformed records" in w.message for w in rec.of("warning"))


def test_adapter_changes_the_scores_and_is_recorded(tiny_llama_dir, tiny_lora_dir, tmp_path):
    runs = {}
    for name, adapter in (("base", ""), ("lora", str(tiny_lora_dir))):
        rc, rec = run(config(tiny_llama_dir, tmp_path / name, adapter=adapter, mode="loglikelihood",
                             prompt_style="lm-eval", limit=3))
        assert rc == ExitCode.OK, [e.to_dict() for e in rec.of("error")]
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text()), items_of(tmp_path / name)
    assert runs["base"][0]["record"]["adapter"] is None
    assert runs["lora"][0]["record"]["adapter"] == str(tiny_lora_dir.resolve())
    assert runs["base"][1][0]["scores"] != pytest.approx(runs["lora"][1][0]["scores"], abs=1e-4)


def test_a_seeded_choice_of_questions_is_the_same_every_time(tiny_long, tmp_path):
    """sample: N questions drawn with the seed (the in-loop benchmark and the export check choose so)."""
    from bench.run import choose_questions

    kw = dict(mode="loglikelihood", prompt_style="lm-eval", limit=0, sample=6)
    rc, _ = run(config(tiny_long.hf, tmp_path / "a", **kw))
    assert rc == ExitCode.OK
    ids = [it["id"] for it in items_of(tmp_path / "a")]
    assert len(ids) == 6 and ids != medqa_ids(6)
    assert ids == [q.id for q in choose_questions(_questions(), 6, 42)]
    rc, _ = run(config(tiny_long.hf, tmp_path / "b", **kw))
    assert [it["id"] for it in items_of(tmp_path / "b")] == ids
    rc, _ = run(config(tiny_long.hf, tmp_path / "c", seed=7, **kw))
    assert [it["id"] for it in items_of(tmp_path / "c")] != ids


def _questions():
    from bench.datasets import load_dataset

    return load_dataset(MEDQA).questions
