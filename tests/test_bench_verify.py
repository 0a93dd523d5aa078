"""Is the export as good as the original (bench/verify.py): `medalpaca export --verify`, `bench verify`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.verify import DEFAULT_QUESTIONS, parse_verify, verdict
from medalpaca_desktop.core.events import parse_line
from medalpaca_desktop.core.typed_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MEDQA = ROOT / "resources" / "sample_questions" / "medqa_sample.jsonl"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "medalpaca_desktop", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_the_questions_argument():
    assert parse_verify("medqa_4options:50") == ("medqa_4options", 50)
    assert parse_verify("medqa_4options") == ("medqa_4options", DEFAULT_QUESTIONS)
    assert parse_verify("/data/exam:v2/step1.json") == ("/data/exam:v2/step1.json", DEFAULT_QUESTIONS)
    assert parse_verify("C:/exams/medqa.jsonl:30") == ("C:/exams/medqa.jsonl", 30)
    with pytest.raises(ConfigError, match="at least one question"):
        parse_verify("medqa_4options:0")


def test_the_verdict_warns_only_when_the_candidate_is_significantly_worse():
    base = dict(n_shared=200, acc_a=0.60, diff_ci=(0.05, 0.15))
    worse, text = verdict({**base, "acc_b": 0.50, "p_value": 0.001}, "the original", "the export")
    assert worse and "significantly worse" in text and "60.0 %" in text and "-10.0 points" in text
    assert "-15.0 to -5.0" in text  # the interval of candidate - reference
    assert not verdict({**base, "acc_b": 0.55, "p_value": 0.20}, "a", "b")[0]  # worse, but within chance
    better, text = verdict({**base, "acc_b": 0.70, "p_value": 0.001}, "a", "b")
    assert not better and "b is significantly better" in text and "No significant" not in text


def test_export_with_verify_scores_both_and_keeps_the_runs(tmp_path, tiny_llama_dir):
    out = tmp_path / "tiny.gguf"
    proc = _cli("export", "--model", str(tiny_llama_dir), "--out", str(out), "--quant", "f32",
                "--verify", f"{MEDQA}:8", "--jsonl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [parse_line(line) for line in proc.stdout.splitlines() if line.strip()]
    assert all(e is not None for e in events)
    assert [e.type for e in events][-2:] == ["result", "done"] and events[-1].ok
    checked = events[-2].data["verify"]
    assert checked["n_shared"] == 8 and not checked["significantly_worse"]
    assert checked["acc_a"] == checked["acc_b"]  # an f32 file scores as its original
    assert "No significant difference" in checked["verdict"]
    stages = {e.stage for e in events if e.type == "progress"}
    assert {"Checking: scoring the original", "Checking: scoring the export"} <= stages  # both runs, named
    folder = tmp_path / "tiny.gguf.verify"
    for name in ("reference", "candidate"):
        summary = json.loads((folder / name / "summary.json").read_text())
        assert summary["n_scored"] == 8 and summary["mode"] == "loglikelihood"


def test_bench_verify_any_two_models_and_its_errors(tmp_path, tiny_llama_dir, tiny_gguf):
    proc = _cli("bench", "verify", "--reference", str(tiny_llama_dir), "--candidate", str(tiny_gguf),
                "--questions", f"{MEDQA}:6", "--out", str(tmp_path / "check"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # any two models are named in the verdict
    assert proc.stdout.startswith(f"On 6 questions: {tiny_llama_dir.name} ") and "McNemar p = " in proc.stdout
    assert f"%, {tiny_gguf.name} " in proc.stdout
    missing = _cli("bench", "verify", "--reference", str(tiny_llama_dir), "--candidate", str(tiny_gguf),
                   "--questions", "medmcqa:6", "--out", str(tmp_path / "missing"))
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and "medmcqa" in lines[0] and "ownload" in lines[0], missing.stderr
