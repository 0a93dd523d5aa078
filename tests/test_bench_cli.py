"""`medalpaca bench` and `python -m bench` as a person and the GUI run them: real processes.

Terminal output (progress line with ETA, results table), JSON-line events,
one-line errors with exit code 2, SIGINT mid-run (exit 130, partial summary)
then --resume, rescore and compare.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_bench_run import MEDQA, medqa_ids, tiny_long  # noqa: F401 - tiny_long is a fixture

from medalpaca_desktop.core.events import parse_line

ROOT = Path(__file__).resolve().parents[1]


def medalpaca(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medalpaca_desktop", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def events_of(stdout: str) -> list:
    lines = [line for line in stdout.splitlines() if line.strip()]
    events = [parse_line(line) for line in lines]
    assert all(e is not None for e in events), lines  # nothing but events on stdout
    return events


def test_terminal_run_shows_progress_and_a_table(tiny_gguf, tmp_path):
    out = tmp_path / "run"
    proc = medalpaca("bench", "--model", str(tiny_gguf), "--dataset", "medqa", "--data", str(MEDQA),
                     "--mode", "loglikelihood", "--prompt-style", "lm-eval", "--limit", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Overall" in proc.stdout and "acc_norm" in proc.stdout and f"Results: {out}" in proc.stdout
    assert "ETA" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_scored"] == 3 and summary["record"]["backend"] == "llamacpp"
    assert [e.type for e in events_of((out / "events.jsonl").read_text())][-1] == "done"


def test_jsonl_prints_only_events(tiny_llama_dir, tmp_path):
    out = tmp_path / "run"
    proc = medalpaca("bench", "--model", str(tiny_llama_dir), "--data", str(MEDQA), "--preset", "lm-eval",
                     "--limit", "4", "--batch-size", "2", "--out", str(out), "--jsonl")
    assert proc.returncode == 0, proc.stderr
    events = events_of(proc.stdout)
    assert events[0].type == "started" and events[-1].type == "done" and events[-1].ok
    assert sorted(e.data["id"] for e in events if e.type == "result") == medqa_ids(4)  # longest prompt first
    assert events[-1].data["summary"]["mode"] == "loglikelihood"
    assert (out / "config.yaml").is_file() and yaml.safe_load((out / "config.yaml").read_text())["batch_size"] == 2


@pytest.mark.parametrize("args, message", [
    (["--model", "/nowhere/m.gguf"], "medalpaca: error: model: /nowhere/m.gguf does not exist"),
    (["--data", "/nowhere/q.jsonl"], "medalpaca: error: data: /nowhere/q.jsonl does not exist"),
    (["--temperature", "5"], "medalpaca: error: temperature: 5.0 is above the maximum 2.0"),
    (["--map", "question"], "medalpaca: error: --map 'question': write FIELD=COLUMN"),
    (["--quantization", "8bit"], "medalpaca: error: quantization: 8-bit/4-bit loading is for Hugging Face"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tiny_gguf, tmp_path):
    base = {"--model": str(tiny_gguf), "--data": str(MEDQA), "--out": str(tmp_path / "run")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    proc = medalpaca("bench", *[x for kv in base.items() for x in kv])
    assert proc.returncode == 2
    assert proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""


def test_corrupt_model_and_bad_questions_from_the_terminal(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    proc = medalpaca("bench", "--model", str(bad), "--data", str(MEDQA), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "medalpaca bench: error: " in proc.stderr and "broken.gguf" in proc.stderr
    assert "Traceback" not in proc.stderr
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "x"}\n')
    proc = medalpaca("bench", "--model", str(bad), "--data", str(data), "--out", str(tmp_path / "run2"))
    assert proc.returncode == 2 and "q.jsonl line 1" in proc.stderr and "--skip-malformed" in proc.stderr


def test_sigint_stops_after_the_question_then_resume_finishes(tiny_long, tmp_path):  # noqa: F811
    from bench.config import BenchConfig

    out = tmp_path / "run"
    cfg = BenchConfig(model=str(tiny_long.llamacpp), data=str(MEDQA), out=str(out), limit=30).save(
        tmp_path / "bench.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        event = parse_line(line)
        if event is not None and event.type == "result":
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    events = events_of("".join(lines) + rest)
    assert events[-1].type == "done" and events[-1].stopped
    scored = len([e for e in events if e.type == "result"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["n_scored"] == scored < 30

    proc2 = subprocess.run([sys.executable, "-m", "bench", "run", str(out / "config.yaml"), "--resume"],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc2.returncode == 0, proc2.stderr
    assert len([e for e in events_of(proc2.stdout) if e.type == "result"]) == 30 - scored
    ids = [json.loads(x)["id"] for x in (out / "items.jsonl").read_text().splitlines()]
    assert ids == medqa_ids(30)
    assert json.loads((out / "summary.json").read_text())["complete"] is True

    # rescore with the other rule, then back; compare the run with itself
    proc3 = medalpaca("bench", "rescore", str(out), "--rule", "lenient")
    assert proc3.returncode == 0 and "rule lenient" in proc3.stdout and "rule paper" in proc3.stdout
    assert json.loads((out / "summary.json").read_text())["rule"] == "lenient"
    from medalpaca_desktop.core.store import Store

    with Store() as store:
        (row,) = store.eval_runs()
        assert row["status"] == "done" and row["n_items"] == 30
        lenient_acc = json.loads((out / "summary.json").read_text())["scores"]["overall"]["accuracy"]
        assert row["accuracy"] == pytest.approx(lenient_acc)
    proc4 = medalpaca("bench", "compare", str(out), str(out), "--json")
    assert proc4.returncode == 0, proc4.stderr
    data = json.loads(proc4.stdout)
    assert data["n_shared"] == 30 and data["diff"] == 0 and data["b"] == data["c"] == 0


def test_rescore_and_compare_errors(tiny_gguf, tmp_path):
    out = tmp_path / "ll"
    assert medalpaca("bench", "--model", str(tiny_gguf), "--data", str(MEDQA), "--preset", "lm-eval", "--limit", "2",
                     "--out", str(out)).returncode == 0
    proc = medalpaca("bench", "rescore", str(out), "--rule", "lenient")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "loglikelihood run has no parsed answers" in proc.stderr
    proc = medalpaca("bench", "compare", str(out), str(out))
    assert proc.returncode == 0 and "Questions both scored: 2" in proc.stdout and "McNemar p = 1" in proc.stdout
    proc = medalpaca("bench", "compare", str(out), str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no such run folder" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(tmp_path / "missing.yaml")], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2 and "no such config file" in proc.stderr
    assert [e.type for e in events_of(proc.stdout)] == ["error", "done"]  # the GUI sees why, too
