"""A fine-tune's run folder and database row: naming, checkpoints, the trainer job, recording an attempt.

The trainer always runs as a `DetachedJob` (`python -m trainer run RUN_DIR/config.yaml` in its
own process session), so it outlives the window when the user leaves a run going. The GUI
creates the run's row before launching (`Store.ensure_training_run`, which the trainer may call
too) so it shows at once, and after an attempt writes only what the worker could not: the
final status while the row still says running, or `crashed` when the trainer ended without a
`done` event.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject

from medalpaca_desktop.core import paths
from medalpaca_desktop.core.events import Done, Event, Metric
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.ui.jobs import DetachedJob, JobError, JobOutcome, end_fields, pid_is_running
from trainer.commands import train_command
from trainer.config import ConfigError, TrainConfig

CONFIG_FILE = "config.yaml"
TRAINER_MARKER = "trainer"  # in the trainer's command line: tells its pid from a reused one


class RunError(Exception):
    """A run cannot be launched or resumed; the message is one sentence for the user."""


# --------------------------------------------------------------------------- run folders


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:limit] or "model"


def model_label(base_model: str) -> str:
    """A short name for a base model path: the folder or file name without .gguf."""
    path = Path(base_model)
    if path.name.lower().endswith(".gguf"):
        return path.name[: -len(".gguf")]
    if path.name.startswith("snapshots") or re.fullmatch(r"[0-9a-f]{40}", path.name or ""):
        return path.parent.parent.name.removeprefix("models--").replace("--", "/")
    return path.name or base_model


def new_run_dir(config: TrainConfig, root: Path | None = None) -> Path:
    """A fresh run folder name: `YYYYmmdd-HHMMSS-<model>-<method>` (unique within `root`)."""
    root = Path(root) if root is not None else paths.runs_dir()
    stem = f"{datetime.now():%Y%m%d-%H%M%S}-{_slug(model_label(config.base_model))}-{config.method}"
    candidate, n = root / stem, 2
    while candidate.exists():
        candidate, n = root / f"{stem}-{n}", n + 1
    return candidate


def last_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete checkpoint, or None."""
    best: tuple[int, Path] | None = None
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    for child in folder.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir() and (best is None or int(match[1]) > best[0]):
            best = (int(match[1]), child)
    return best


def trainer_is_running(pid: int | None) -> bool:
    return pid_is_running(pid, TRAINER_MARKER)


# --------------------------------------------------------------------------- the row


def prepare_run(store: Store, config_path: str | Path) -> int:
    """The training_runs row of a config's run folder (created now if missing, so it shows at once)."""
    try:
        config = TrainConfig.load(config_path)
    except ConfigError as exc:
        raise RunError(f"The config cannot run: {exc}") from None
    run_dir = Path(config.output_dir).expanduser().resolve()
    row = store.training_run_by_dir(str(run_dir))
    if row is not None and row["status"] == RunStatus.RUNNING.value and trainer_is_running(row["pid"]):
        raise RunError(f"The run in {run_dir} is already running.")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"Cannot create the run folder {run_dir}: {exc.strerror or exc}.") from None
    target = run_dir / CONFIG_FILE
    if Path(config_path).resolve() != target:
        config.save(target)  # the run folder always holds the config it runs with
    return store.ensure_training_run(run_dir.name, str(run_dir), method=config.method,
                                     base_model=config.base_model, data=list(config.data), config=config.to_dict())


def trainer_job(row: dict[str, Any], parent: QObject | None = None) -> DetachedJob:
    return DetachedJob(row["run_dir"], marker=TRAINER_MARKER, name="the trainer", parent=parent)


def start_attempt(store: Store, run_id: int, job: DetachedJob, resume: bool, env: dict[str, str]) -> None:
    """Start the trainer (a new run, or `--resume` from the last checkpoint) and mark the row running."""
    config = job.run_dir / CONFIG_FILE
    if not config.is_file():
        raise RunError(f"The run's config {config} is missing; start a new run instead.")
    try:
        job.start(train_command(config, resume=resume), env=env)
    except JobError as exc:
        raise RunError(str(exc)) from None
    store.update_training_run(run_id, status=RunStatus.RUNNING.value, pid=job.pid(), started_at=job.started_at,
                              finished_at=None, error=None)


def record_attempt(store: Store, run_id: int, outcome: JobOutcome, events: list[Event]) -> None:
    """Write what the trainer could not: its end while the row still says running, or that it crashed."""
    row = next((r for r in store.training_runs() if r["id"] == run_id), None)
    fields = end_fields(row["status"], outcome) if row is not None else None
    if fields is not None:
        store.update_training_run(run_id, final_loss=last_loss(events), **fields)


# --------------------------------------------------------------------------- messages


def attempt_summary(outcome: JobOutcome, events: list[Event]) -> str:
    """One sentence on how an attempt ended, for the status bar."""
    steps = _last_step(events)
    done = outcome.done
    if outcome.status == RunStatus.DONE:
        if done is not None:
            steps = done.data.get("steps", steps)
        text = f"Finished after {steps} steps." if steps is not None else "Finished."
        loss = done.data.get("train_loss") if done is not None else None
        if isinstance(loss, (int, float)):
            text += f" Final training loss {loss:.4f}."
        after = (done.data.get("after_errors") if done is not None else None) or []
        if after:
            text += " Some after-training steps failed: " + "; ".join(map(str, after))
        return text
    if outcome.status == RunStatus.STOPPED:
        at = f" at step {steps}" if steps is not None else ""
        if done is not None and done.stopped:
            return f"Stopped{at} with a checkpoint; Resume continues from it."
        return f"Stopped{at}; Resume continues from the last saved checkpoint."
    return outcome.message or f"The run {outcome.status.value}."


def _last_step(events: list[Event]) -> int | None:
    for event in reversed(events):
        if isinstance(event, Metric) and event.step is not None and "loss" in event.values:
            return int(event.step)
    return None


def last_loss(events: list[Event]) -> float | None:
    for event in reversed(events):
        if isinstance(event, Done) and isinstance(event.data.get("train_loss"), (int, float)):
            return float(event.data["train_loss"])
        if isinstance(event, Metric) and isinstance(event.values.get("loss"), (int, float)):
            return float(event.values["loss"])
    return None
