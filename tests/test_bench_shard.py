"""`medalpaca bench --num-processes 2`: two CPU processes through accelerate (gloo), as the trainer's test.

The shards together must give exactly the single-process run (same questions, same numbers), with
rank 0's events only on stdout, the items merged into items.jsonl and the database, and nothing left
behind; an interrupted sharded run's rank files are resumed, not scored again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_bench_run import MEDQA

from medalpaca_desktop.core.events import parse_line

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 10


def bench(model: Path, out: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "medalpaca_desktop", "bench", "--model", str(model), "--backend", "hf",
           "--data", str(MEDQA), "--mode", "loglikelihood", "--prompt-style", "lm-eval", "--limit", str(LIMIT),
           "--batch-size", "4", "--out", str(out), "--jsonl", *extra]
    env = {**os.environ, "MEDALPACA_DESKTOP_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def items_of(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows), "an item was written twice"
    return by_id


@pytest.mark.slow
def test_two_processes_give_the_single_process_numbers(tiny_llama_dir, tmp_path):
    from medalpaca_desktop.core.store import Store

    home = tmp_path / "home"
    single = bench(tiny_llama_dir, tmp_path / "one", home)
    assert single.returncode == 0, single.stderr[-3000:]
    proc = bench(tiny_llama_dir, tmp_path / "two", home, "--num-processes", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accelerate.commands.launch" in proc.stderr and "Traceback" not in proc.stderr
    events = [e for e in map(parse_line, proc.stdout.splitlines()) if e is not None]
    assert [e.type for e in events].count("started") == 1  # rank 0 alone speaks on stdout
    assert events[-1].type == "done" and events[-1].ok
    results = [e for e in events if e.type == "result" and e.data.get("kind") == "item"]
    assert 0 < len(results) < LIMIT  # rank 0 scored its share; the other rank the rest

    one, two = items_of(tmp_path / "one"), items_of(tmp_path / "two")
    assert set(one) == set(two) and len(two) == LIMIT
    for key in one:
        assert two[key]["pred"] == one[key]["pred"]
        for letter, value in one[key]["scores"].items():
            assert two[key]["scores"][letter] == pytest.approx(value, abs=1e-4)
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["complete"] and s2["scores"]["overall"] == s1["scores"]["overall"]
    left = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert not [n for n in left if n.startswith("items.rank") or n.endswith(".done")], left

    os.environ["MEDALPACA_DESKTOP_HOME"] = str(home)
    try:
        with Store() as store:
            row = store.eval_run_by_dir(str((tmp_path / "two").resolve()))
            assert row is not None and row["status"] == "done"
            assert len(store.eval_items(row["id"])) == LIMIT
    finally:
        os.environ.pop("MEDALPACA_DESKTOP_HOME")


@pytest.mark.slow
def test_an_interrupted_sharded_run_resumes_from_every_rank_file(tiny_llama_dir, tmp_path):
    home = tmp_path / "home"
    full = bench(tiny_llama_dir, tmp_path / "full", home)
    assert full.returncode == 0, full.stderr[-3000:]
    lines = (tmp_path / "full" / "items.jsonl").read_text().splitlines()
    out = tmp_path / "cut"
    first = bench(tiny_llama_dir, out, home, "--limit", "1")  # a run folder with its config
    assert first.returncode == 0, first.stderr[-3000:]
    # what two killed ranks leave: rank 0 wrote items 0 and 2, rank 1 items 1 and 3 (its last line torn)
    (out / "items.jsonl").unlink()
    (out / "items.rank0.jsonl").write_text(lines[0] + "\n" + lines[2] + "\n")
    (out / "items.rank1.jsonl").write_text(lines[1] + "\n" + lines[3] + "\n" + lines[4][:40])
    (out / ".rank1.done").write_text("a marker of the earlier launch")
    proc = bench(tiny_llama_dir, out, home, "--num-processes", "2", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [e for e in map(parse_line, proc.stdout.splitlines()) if e is not None]
    started = next(e for e in events if e.type == "started")
    assert started.info["done"] == 4 and started.info["total"] == LIMIT
    items = items_of(out)
    assert len(items) == LIMIT
    for line in lines[:4]:
        kept = json.loads(line)
        assert items[kept["id"]] == kept  # taken from the rank files, not scored again
    assert json.loads((out / "summary.json").read_text())["complete"]
    assert not list(out.glob("items.rank*")) and not list(out.glob(".rank*.done"))


@pytest.mark.slow
def test_a_suite_run_in_two_processes(tiny_llama_dir, tmp_path):
    from helpers.task_fixtures import MMLU_ROWS, write_task_files

    home = tmp_path / "home"
    os.environ["MEDALPACA_DESKTOP_HOME"] = str(home)
    try:
        from medalpaca_desktop.hub import datasets_dir

        write_task_files(datasets_dir())
    finally:
        os.environ.pop("MEDALPACA_DESKTOP_HOME")
    out = tmp_path / "suite"
    env = {**os.environ, "MEDALPACA_DESKTOP_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "bench", "suite", "--model", str(tiny_llama_dir),
                           "--label", "tiny", "--tasks", "mmlu_anatomy,medmcqa", "--out", str(out), "--preset",
                           "lm-eval", "--num-processes", "2"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((out / "suite_table.json").read_text())
    assert table["cells"]["tiny"]["mmlu_anatomy"]["n"] == len(MMLU_ROWS["anatomy"])
    assert table["cells"]["tiny"]["medmcqa"]["complete"]
    assert not list(out.rglob("items.rank*"))
