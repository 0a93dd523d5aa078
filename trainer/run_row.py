"""The fine-tune's own `training_runs` row (rank 0), so `medalpaca train` in a terminal shows in the runs list.

The GUI registers the same row (`Store.ensure_training_run` on the resolved run folder), so
whoever comes first creates it and both update one row. The row follows the run's events:
the last training loss and the last error message are what the runs list shows.
"""

from __future__ import annotations

import json
from pathlib import Path

from medalpaca_desktop.core.events import Done, Error, Event, EventWriter, Metric
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.run_rows import RunRow, status_of
from trainer.config import TrainConfig


class TrainingRow:
    """Running from `open` to `finish`; a database problem is one warning event, never a failed run."""

    def __init__(self, config: TrainConfig, run_dir: Path, writer: EventWriter) -> None:
        self.config = config
        self.run_dir = run_dir.expanduser().resolve()
        self.row = RunRow("training", writer.emit)
        self.final_loss: float | None = None
        self.error: str | None = None
        self.best: dict[str, object] = {}
        writer.listen(self._follow)

    def open(self) -> None:
        config, run_dir = self.config, str(self.run_dir)
        self.row.open(lambda store: store.ensure_training_run(
            self.run_dir.name, run_dir, method=config.method, base_model=config.base_model,
            data=list(config.data), config=config.to_dict()))

    def _follow(self, event: Event) -> None:
        if isinstance(event, Metric) and isinstance(event.values.get("loss"), (int, float)):
            self.final_loss = float(event.values["loss"])
        elif isinstance(event, Done):
            if isinstance(event.data.get("train_loss"), (int, float)):
                self.final_loss = float(event.data["train_loss"])
            self.best = {k: event.data[k] for k in ("best_by", "best_value", "best_step", "best_checkpoint")
                         if k in event.data}
            if isinstance(event.data.get("bench"), dict):
                self.best["bench"] = event.data["bench"]
        elif isinstance(event, Error):
            self.error = event.message

    def finish(self, code: ExitCode) -> None:
        status = status_of(code)
        extra = {"best_json": json.dumps(self.best)} if self.best else {}
        self.row.finish(status, final_loss=self.final_loss, error=self.error if code != ExitCode.OK else None,
                        **extra)
        self.row.close()
