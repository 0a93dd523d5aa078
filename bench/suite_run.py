"""Running a suite (the worker's job behind `medalpaca bench suite`): every run of a plan in order.

Apart from bench/suite.py so that the GUI, which plans suites and reads their tables through
bench.suite, never imports the runner and what it loads (import-linter keeps it so); the
Benchmark tab queues the plan's runs one by one instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bench.suite import TABLE_CSV, SuitePlan, write_table


def run_suite(plan: SuitePlan, *, writer: Any, stop: Any, terminal: Any = None, resume: bool = False) -> Any:
    """Every run of the plan in order, one model load per model; a run that cannot start (a task not
    downloaded) is reported and the suite goes on. Each run keeps its own events.jsonl; the suite's
    stream carries its progress (runs done, the current run's questions) and one `done` at the end."""
    from bench.run import ModelCache, run_job
    from medalpaca_desktop.core.events import Done, Error, EventWriter, Log, Progress, Result, Started, Warning
    from medalpaca_desktop.core.jobs import ExitCode

    runs = plan.runs()
    plan.save()
    writer.emit(Started(job="bench-suite", info={"out": plan.out, "models": plan.labels, "tasks": plan.tasks,
                                                 "runs": len(runs)}))
    models = ModelCache()
    codes: list[ExitCode] = []
    try:
        for index, config in enumerate(runs):
            if stop.is_set():
                break
            what = f"{config.display_label} · {config.task}"
            writer.emit(Progress(stage="suite", current=index, total=len(runs), unit="runs",
                                 message=f"run {index + 1}/{len(runs)}: {what}"))
            if terminal is not None:
                terminal.write(f"[{index + 1}/{len(runs)}] {what}\n")
            run_dir = Path(config.out)
            run_dir.mkdir(parents=True, exist_ok=True)
            inner = EventWriter(None, log_path=run_dir / "events.jsonl")

            def forward(event: Any, what: str = what) -> None:
                if event.type == "progress" and event.stage == "eval":
                    writer.emit(dataclasses.replace(event, message=f"{what}: {event.message}"))
                elif event.type == "error":
                    writer.emit(Warning(message=f"{what}: {event.message}", extra={"kind": event.kind}))

            inner.listen(forward)
            try:
                if config.num_processes > 1:  # its own processes through accelerate; its events stay in its folder
                    import subprocess

                    from bench.shard import run_launched

                    inner.close()
                    models.close()
                    raw = run_launched(config, run_dir, resume=resume, stop=stop, stdout=subprocess.DEVNULL)
                    code = ExitCode(raw) if raw in {c.value for c in ExitCode} else ExitCode.FAILED
                else:
                    code = run_job(config, resume=resume or (run_dir / "items.jsonl").is_file(), writer=inner,
                                   stop=stop, terminal=terminal, models=models)
            finally:
                inner.close()
            codes.append(ExitCode(code))
            if code == ExitCode.OK:
                writer.emit(Result(data={"run_dir": str(run_dir), "model": config.display_label,
                                         "task": config.task}))
            if models.key is not None and index + 1 < len(runs) and runs[index + 1].model != config.model:
                models.close()  # the next model's turn: give the memory back first
            write_table(plan.out)
            writer.emit(Log(message=f"{what}: finished ({len(codes)}/{len(runs)}); the table is in "
                                    f"{Path(plan.out) / TABLE_CSV}"))
    finally:
        models.close()
    stopped = stop.is_set() and len(codes) < len(runs) or ExitCode.STOPPED in codes
    failed = [c for c in codes if c not in (ExitCode.OK, ExitCode.STOPPED)]
    if failed and not stopped:
        writer.emit(Error(message=f"{len(failed)} of {len(runs)} runs did not finish; the others are in the table "
                                  "(their messages are above; fix them and run the suite again to finish)",
                          kind="suite"))
    writer.emit(Done(ok=not failed and not stopped, stopped=stopped, data={"out": plan.out}))
    if stopped:
        return ExitCode.STOPPED
    return max(failed) if failed else ExitCode.OK
