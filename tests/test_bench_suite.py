"""`medalpaca bench suite`: models x tasks as ordinary runs, the table, the paired comparison, resume.

Real subprocesses of the CLI on the tiny GGUF models over the fixture task files (tests/helpers/
task_fixtures.py) in an isolated app home.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import test_bench_run
from helpers.task_fixtures import MEDMCQA_ROWS, MMLU_ROWS, PUBMEDQA_ROWS, write_task_files

from bench.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TASKS = "medmcqa,pubmedqa,mmlu_anatomy"
tiny_long = test_bench_run.tiny_long  # the tiny LLaMA with a 2048 context, as HF folder and GGUF
SIZES = {"medmcqa": len(MEDMCQA_ROWS), "pubmedqa": len(PUBMEDQA_ROWS), "mmlu_anatomy": len(MMLU_ROWS["anatomy"])}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MEDALPACA_DESKTOP_HOME", str(home))
    from medalpaca_desktop.hub import datasets_dir

    write_task_files(datasets_dir())
    return home


def medalpaca(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDALPACA_DESKTOP_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "medalpaca_desktop", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def test_plan_lays_out_one_run_per_model_and_task(tmp_path):
    from bench.suite import plan_suite

    plan = plan_suite(["/m/a.gguf", "/n/a.gguf"], "mmlu_anatomy,pubmedqa", tmp_path / "s", {"mode": "loglikelihood"})
    assert plan.labels == ["a", "a-2"]  # two models with one file name keep their own folders
    assert plan.tasks == ["pubmedqa", "mmlu_anatomy"]  # catalog order
    runs = plan.runs()
    assert [(Path(r.out).parent.name, Path(r.out).name) for r in runs] == [
        ("a", "pubmedqa"), ("a", "mmlu_anatomy"), ("a-2", "pubmedqa"), ("a-2", "mmlu_anatomy")]
    assert all(r.mode == "loglikelihood" and r.data == "" for r in runs)
    with pytest.raises(ConfigError, match="tasks: unknown task 'medqa'"):
        plan_suite(["/m/a.gguf"], "medqa", tmp_path / "s")
    with pytest.raises(ConfigError, match="mode"):
        plan_suite(["/m/a.gguf"], "usmle", tmp_path / "s", {"mode": "vibes"})


def test_suite_runs_tables_compares_and_resumes(home, tiny_gguf, tiny_long, tmp_path):
    out = tmp_path / "suite"
    models = ["--model", str(tiny_gguf), "--label", "tiny", "--model", str(tiny_long.llamacpp), "--label", "long"]
    proc = medalpaca("bench", "suite", *models, "--tasks", TASKS, "--out", str(out), "--preset", "lm-eval",
                     home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "average" in proc.stdout and "Traceback" not in proc.stderr

    table = json.loads(medalpaca("bench", "table", str(out), "--json", home=home).stdout)
    assert table["labels"] == ["tiny", "long"] and table["tasks"] == ["medmcqa", "pubmedqa", "mmlu_anatomy"]
    for label in ("tiny", "long"):
        accs = []
        for task, n in SIZES.items():
            cell = table["cells"][label][task]
            summary = json.loads((out / label / task / "summary.json").read_text())
            assert cell["n"] == n == summary["scores"]["overall"]["n"] and cell["complete"]
            assert cell["accuracy"] == summary["scores"]["overall"]["accuracy"]
            assert cell["ci_low"] <= cell["accuracy"] <= cell["ci_high"]
            accs.append(cell["accuracy"])
        assert table["average"][label] == pytest.approx(sum(accs) / len(accs))
        pooled = table["pooled"][label]
        assert pooled["n"] == sum(SIZES.values())
    csv_lines = (out / "suite_table.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,task,accuracy") and len(csv_lines) == 1 + 2 * (len(SIZES) + 1)

    # one model load per model: the second and third task reuse it
    logs = [json.loads(line) for task in SIZES
            for line in (out / "tiny" / task / "events.jsonl").read_text().splitlines()]
    messages = [e.get("message", "") for e in logs if e["type"] == "log"]
    assert sum(m.startswith("Loaded ") for m in messages) == 1
    assert sum("already loaded" in m for m in messages) == 2

    compare = json.loads(medalpaca("bench", "suite-compare", str(out), "tiny", "long", "--json", home=home).stdout)
    assert set(compare["tasks"]) == set(SIZES)
    assert compare["pooled"]["b"] == sum(c["b"] for c in compare["tasks"].values())
    assert compare["pooled"]["n_shared"] == sum(SIZES.values())
    low, high = compare["average_diff_ci"]
    assert low <= compare["average_diff"] <= high

    # a run cut short resumes on its own; finished runs are not scored again
    items = out / "long" / "medmcqa" / "items.jsonl"
    first = items.read_text().splitlines()[0]
    items.write_text(first + "\n")
    (out / "long" / "medmcqa" / "summary.json").unlink()
    before = (out / "tiny" / "pubmedqa" / "items.jsonl").read_text()
    again = medalpaca("bench", "suite", *models, "--tasks", TASKS, "--out", str(out), "--preset", "lm-eval",
                      home=home)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(items.read_text().splitlines()) == SIZES["medmcqa"]
    assert json.loads(items.read_text().splitlines()[0]) == json.loads(first)
    assert (out / "tiny" / "pubmedqa" / "items.jsonl").read_text() == before


def test_a_task_not_downloaded_is_reported_and_the_suite_goes_on(home, tiny_gguf, tmp_path):
    from bench.tasks import get_task

    shutil.rmtree(get_task("pubmedqa").folder())
    out = tmp_path / "suite"
    proc = medalpaca("bench", "suite", "--model", str(tiny_gguf), "--tasks", "pubmedqa,mmlu_anatomy", "--out",
                     str(out), "--preset", "lm-eval", home=home)
    assert proc.returncode == 2
    assert "pubmedqa: PubMedQA" in proc.stderr and "not downloaded yet" in proc.stderr
    assert "1 of 2 runs did not finish" in proc.stderr and "Traceback" not in proc.stderr
    table = json.loads((out / "suite_table.json").read_text())
    assert [list(row) for row in table["cells"].values()] == [["mmlu_anatomy"]]
