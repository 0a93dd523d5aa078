"""perf/gpu_check.py --tiny: every path the GPU check runs, on the CPU, so the script a GPU session runs works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_runs_every_path(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "perf.gpu_check", "--tiny", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    assert all(r["ok"] for r in rows.values()), {k: r.get("error") for k, r in rows.items() if not r["ok"]}
    for name in ("full bf16", "LoRA bf16, checkpointing on", "LoRA bf16, checkpointing off", "LoRA on an 8-bit base",
                 "QLoRA 4-bit NF4"):
        row = rows[f"train: {name}"]
        assert row["tokens_per_s"] > 0 and row["estimate_gb"] > 0
    assert rows["chat (transformers)"]["tokens"] > 0
    assert rows["benchmark log-likelihood"]["questions_per_s"] > 0 and rows["benchmark generate"]["questions_per_s"] > 0
    assert rows["TRL SFTTrainer, same LoRA job"]["engine_ratio"] > 0
    assert "| train: QLoRA 4-bit NF4 | yes |" in proc.stdout  # the table a GPU session pastes into perf/README.md


def test_gpu_check_without_a_gpu_says_to_use_tiny():
    proc = subprocess.run([sys.executable, "-m", "perf.gpu_check"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 2 and "--tiny" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
