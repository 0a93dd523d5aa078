"""The weights a run folder holds, and the one a person picks for chat, merge and export.

A finished run has final/ (the best weights when the run chose a best checkpoint, else the
last), maybe merged/, and the checkpoints that rotation kept (the last ones and the best).
"Chat with this model" and export use final/ unless the person picks another: this module
lists them with their step and scores (from the run's events.jsonl) and resolves a choice
(best, final, merged or a step) to a model folder, plus the adapter for a LoRA run.

Light on purpose (json and paths only): the GUI reads it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from medalpaca_desktop.core.events import read_events_file

FINAL, MERGED, CHECKPOINTS = "final", "merged", "checkpoints"


class CheckpointError(ValueError):
    """The chosen weights are not in the run folder; the message lists what is."""


@dataclass(frozen=True)
class SavedWeights:
    """One set of weights in a run folder."""

    key: str  # "final", "merged" or "step-N"
    folder: Path  # holds config.json (full weights) or adapter_config.json (an adapter)
    step: int | None = None
    val_loss: float | None = None
    bench_accuracy: float | None = None
    best: bool = False  # the run's best checkpoint (by its best_by measure)

    @property
    def is_adapter(self) -> bool:
        return not (self.folder / "config.json").is_file() and (self.folder / "adapter_config.json").is_file()

    def label(self) -> str:
        """As the run monitor's picker lists it: short, the scores that chose the best."""
        scores = []
        if self.bench_accuracy is not None:
            scores.append(f"{100 * self.bench_accuracy:.1f} %")
        if self.val_loss is not None:
            scores.append(f"loss {self.val_loss:.3f}")
        score = f" · {' · '.join(scores)}" if scores else ""
        if self.key == MERGED:
            return "Merged model"
        if self.key == FINAL:
            return f"Final = best, step {self.step}{score}" if self.best else f"Final weights{score}"
        return f"Step {self.step}{' (best)' if self.best else ''}{score}"


def _holds_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def _scores(run_dir: Path) -> tuple[dict[int, float], dict[int, float], int | None]:
    """val_loss and bench_accuracy per step, and the best step, from the run's events."""
    losses: dict[int, float] = {}
    accuracy: dict[int, float] = {}
    best: int | None = None
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return losses, accuracy, None
    for event in read_events_file(path):
        if event.type == "metric" and getattr(event, "step", None) is not None:
            values = getattr(event, "values", {}) or {}
            if "val_loss" in values:
                losses[int(event.step)] = float(values["val_loss"])  # type: ignore[attr-defined]
            if "bench_accuracy" in values:
                accuracy[int(event.step)] = float(values["bench_accuracy"])  # type: ignore[attr-defined]
        elif event.type == "done":
            data = getattr(event, "data", {}) or {}
            if isinstance(data.get("best_step"), int):
                best = data["best_step"]
    return losses, accuracy, best


def _trainer_state(folder: Path, losses: dict[int, float], accuracy: dict[int, float]) -> int | None:
    """The Trainer's own record (a run without events.jsonl, e.g. one started from Python): scores filled
    in from its log history, and its best step."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for entry in state.get("log_history") or []:
        step = entry.get("step")
        if isinstance(step, int) and "eval_loss" in entry:
            losses.setdefault(step, float(entry["eval_loss"]))
        if isinstance(step, int) and "eval_bench_accuracy" in entry:
            accuracy.setdefault(step, float(entry["eval_bench_accuracy"]))
    step = state.get("best_global_step")
    return step if isinstance(step, int) else None


def saved_weights(run_dir: str | Path) -> list[SavedWeights]:
    """final/, merged/ and every complete checkpoint, newest checkpoint first."""
    run_dir = Path(run_dir)
    losses, accuracy, best = _scores(run_dir)
    steps: list[tuple[int, Path]] = []
    for child in (run_dir / CHECKPOINTS).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir() and _holds_weights(child):
            steps.append((int(match.group(1)), child))
    steps.sort(reverse=True)
    if steps:
        recorded = _trainer_state(steps[0][1], losses, accuracy)
        best = best if best is not None else recorded
    out: list[SavedWeights] = []
    if _holds_weights(run_dir / MERGED):
        out.append(SavedWeights(MERGED, run_dir / MERGED))
    if _holds_weights(run_dir / FINAL):
        final_step = best if best is not None else (max(losses) if losses else None)
        out.append(SavedWeights(FINAL, run_dir / FINAL, step=final_step, val_loss=losses.get(final_step or -1),
                                bench_accuracy=accuracy.get(final_step or -1), best=best is not None))
    for step, folder in steps:
        out.append(SavedWeights(f"step-{step}", folder, step=step, val_loss=losses.get(step),
                                bench_accuracy=accuracy.get(step), best=step == best))
    return out


def pick(run_dir: str | Path, choice: str = "final") -> SavedWeights:
    """`choice`: final (the default: the best weights when the run kept a best), merged, best, or a step number."""
    weights = saved_weights(run_dir)
    choice = str(choice).strip().lower()
    wanted: SavedWeights | None = None
    if choice in (FINAL, MERGED):
        wanted = next((w for w in weights if w.key == choice), None)
    elif choice == "best":
        wanted = next((w for w in weights if w.key.startswith("step-") and w.best), None)
        wanted = wanted or next((w for w in weights if w.key == FINAL), None)
    elif choice.removeprefix("step-").isdigit():
        wanted = next((w for w in weights if w.key == f"step-{int(choice.removeprefix('step-'))}"), None)
    else:
        raise CheckpointError(f"--checkpoint {choice!r}: give best, final, merged or a step number")
    if wanted is None:
        have = ", ".join(w.key.removeprefix("step-") for w in weights) or "none yet"
        raise CheckpointError(f"{run_dir} has no {choice!r} weights; it has: {have}")
    return wanted


def model_and_adapter(weights: SavedWeights) -> tuple[Path, Path | None]:
    """The model folder to load, and the adapter on top of it for a LoRA run (its base from adapter_config)."""
    if not weights.is_adapter:
        return weights.folder, None
    try:
        cfg = json.loads((weights.folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{weights.folder / 'adapter_config.json'} cannot be read ({exc})") from None
    base = cfg.get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise CheckpointError(f"the adapter's base model {base or '(not recorded)'} is not on this computer")
    return Path(base), weights.folder
