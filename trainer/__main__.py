"""`python -m trainer run CONFIG.yaml [--set key=value ...] [--resume] [--num-processes N]`.

Also `python -m trainer preview CONFIG [--json]`: the data as the model will see it (trainer/preview.py).

The same job as `medalpaca train`. stdout carries only protocol events (JSON lines);
logs go to stderr. A bad config is one line on stderr and exit code 2. Both commands
start through core.worker.run_worker (signals, the unexpected error, the exit code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medalpaca_desktop.core.jobs import ExitCode


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `python -m trainer run` and `medalpaca train`."""
    p.add_argument("config", help="the run's YAML config (see resources/presets)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config key (repeatable), e.g. --set max_steps=10")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--num-processes", type=int, help="processes/GPUs per machine (default: the config's)")
    p.add_argument("--num-machines", type=int, default=1, help="machines in the job (passed to accelerate)")
    p.add_argument("--machine-rank", type=int, default=0, help="this machine's rank (passed to accelerate)")
    p.add_argument("--main-process-ip", help="address of the rank-0 machine (passed to accelerate)")
    p.add_argument("--main-process-port", type=int, help="port of the rank-0 machine (passed to accelerate)")


def run_from_args(args: argparse.Namespace) -> int:
    """Validate the config (cheap), then run in-process or through accelerate launch."""
    from trainer.config import ConfigError, TrainConfig
    from trainer.launch import LaunchOptions, is_launched_child, launch

    overrides = list(args.overrides)
    if args.num_processes:
        overrides.append(f"num_processes={args.num_processes}")
    try:
        config = TrainConfig.load(args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if (config.num_processes > 1 or args.num_machines > 1) and not is_launched_child():
        from medalpaca_desktop.core.events import Done, Error, EventWriter
        from trainer.model_files import resolve_base_model
        from trainer.run import bad_input_kind

        # check the base and de-quantize a GGUF base once here, so the children find it in the cache
        writer = EventWriter(sys.stdout)
        try:
            resolve_base_model(config, writer.emit)
        except Exception as exc:
            kind = bad_input_kind(exc)
            if kind is None:
                raise
            writer.emit(Error(message=str(exc), kind=kind))
            writer.emit(Done(ok=False, data={"run_dir": config.output_dir}))
            return ExitCode.BAD_INPUT
        opts = LaunchOptions(config.num_processes, args.num_machines, args.machine_rank,
                             args.main_process_ip, args.main_process_port)
        return launch(args.config, overrides, args.resume, opts)

    from pathlib import Path

    from medalpaca_desktop.core.worker import run_worker
    from trainer.run import run_job, world

    rank, _ = world()
    log = None
    if rank == 0:
        Path(config.output_dir).expanduser().mkdir(parents=True, exist_ok=True)
        log = Path(config.output_dir).expanduser() / "events.jsonl"
    return run_worker(lambda worker: run_job(config, resume=args.resume, writer=worker.writer, stop=worker.stop),
                      name="fine-tune", log_path=log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="MedAlpaca Desktop fine-tuning engine")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a fine-tune from a config file")
    add_train_arguments(run)
    prev = sub.add_parser("preview", help="show the data as the model will see it (the wizard's preview)")
    prev.add_argument("config", help="a YAML config (base_model, data, template and max_length are used)")
    prev.add_argument("--rows", type=int, default=5, help="records to render (default 5)")
    prev.add_argument("--json", action="store_true", help="print one JSON document (for the GUI)")
    args = parser.parse_args(argv)
    if args.command == "preview":
        from trainer.preview import main_preview

        return main_preview(args.config, rows=args.rows, as_json=args.json)
    return run_from_args(args)


if __name__ == "__main__":
    raise SystemExit(main())
