"""A press of Run on a suite task: the models x tasks plan (bench.suite.plan_suite) in a new folder.

The plan's runs are ordinary BenchConfigs laid out as OUT/<model>/<task>/, so the tab's queue
runs them like any other run (each resumable, each in the History), and suite.json beside them
lets the Suite view and `medalpaca bench table OUT` read them back as one table.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from pathlib import Path
from typing import Any

from bench.config import CLI_FLAGS, BenchConfig, ConfigError
from bench.suite import SUITE_FILE, SuitePlan, plan_suite
from medalpaca_desktop.core import paths
from medalpaca_desktop.core.model_info import ModelInfo

#: the form's fields every run of a suite shares (the rest are per run: model, label, task, out).
SHARED_FIELDS = ("quantization", "mode", "prompt_style", "rule", "apply_chat_template", "temperature", "top_p",
                 "top_k", "greedy", "max_new_tokens", "seed", "batch_size", "limit", "n_ctx", "gpu_layers")


def new_suite_dir(tasks: str, root: Path | None = None) -> Path:
    """A fresh folder per press of Run, named with the time: RUNS/suite-20250101-120000-multimedqa."""
    root = root or paths.runs_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = tasks if "," not in tasks else f"{len(tasks.split(','))}-tasks"
    base = root / f"suite-{stamp}-{name}"
    candidate, n = base, 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate


def suite_settings(base: BenchConfig, models: list[ModelInfo], quantization: str) -> dict[str, Any]:
    """The form's protocol as the suite's shared settings (those that differ from the defaults)."""
    if any(m.kind == "adapter" for m in models):
        raise ConfigError("A LoRA adapter is scored on your own questions for now: merge it into its base model "
                          "(Fine-tune tab, Export) or untick it to run the suite.")
    if quantization != "none" and any(m.kind == "gguf" for m in models):
        raise ConfigError("8-bit/4-bit loading applies to every model of a suite and a GGUF file is already "
                          "quantized: set Hugging Face weights to “as saved”, or tick only Hugging Face models.")
    config = dataclasses.replace(base, quantization=quantization)
    defaults = BenchConfig()
    return {name: getattr(config, name) for name in SHARED_FIELDS
            if getattr(config, name) != getattr(defaults, name) or name in ("mode", "prompt_style")}


def plan_for(models: list[ModelInfo], tasks: str, base: BenchConfig, quantization: str,
             out: Path | str | None = None) -> SuitePlan:
    """The plan for the ticked models on the chosen tasks; ConfigError (one sentence) for what cannot run."""
    if not models:
        raise ConfigError("Tick at least one model to score (models come from the Models tab).")
    settings = suite_settings(base, models, quantization)
    return plan_suite([m.path for m in models], tasks, out or new_suite_dir(tasks), settings,
                      labels=[m.name for m in models])


def suite_command(plan: SuitePlan) -> str:
    """The same suite as a person types it: `medalpaca bench suite --model M --label L ... --out OUT`."""
    cmd = ["medalpaca", "bench", "suite"]
    for model, label in zip(plan.models, plan.labels):
        cmd += ["--model", model, "--label", label]
    cmd += ["--tasks", ",".join(plan.tasks), "--out", plan.out]
    for name, value in plan.settings.items():
        flag = CLI_FLAGS.get(name)
        if flag is None:
            continue
        if isinstance(value, bool):
            if value:
                cmd.append(flag)
            continue
        cmd += [flag, str(value)]
    return shlex.join(cmd)


def suite_folder_of(run_dir: str | Path) -> Path | None:
    """The suite a run belongs to: OUT of OUT/<model>/<task>/ when OUT holds suite.json."""
    folder = Path(run_dir).expanduser()
    if len(folder.parents) < 2:
        return None
    out = folder.parents[1]
    return out if (out / SUITE_FILE).is_file() else None
