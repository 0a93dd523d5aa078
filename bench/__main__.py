"""`python -m bench run CONFIG [--resume]`, `rescore RUN_DIR --rule R`, `compare RUN_A RUN_B [--json]`.

The same engine as `medalpaca bench`. With `run`, stdout carries only protocol
events (JSON lines, also appended to RUN_DIR/events.jsonl) and logs go to
stderr. Bad input (config, questions, model) is one line on stderr, an `error`
event and exit code 2; a stop (SIGINT/SIGTERM) exits 130 after writing a
partial summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medalpaca_desktop.core.jobs import ExitCode

ACTIONS = ("run", "rescore", "compare")


def _fail(prog: str, message: str, code: ExitCode = ExitCode.BAD_INPUT) -> ExitCode:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def execute(config: Any, *, resume: bool, jsonl: bool, prog: str) -> ExitCode:
    """Run a validated BenchConfig: events on stdout (jsonl) or a progress line and a table (terminal)."""
    from bench.run import describe_summary, run_job
    from medalpaca_desktop.core.worker import TerminalWriter, run_worker

    run_dir = Path(config.out).expanduser()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(prog, f"out: cannot create {run_dir} ({exc.strerror or exc})")
    log = run_dir / "events.jsonl"
    terminal = None if jsonl else sys.stderr
    code = run_worker(lambda worker: run_job(config, resume=resume, writer=worker.writer, stop=worker.stop,
                                             terminal=terminal),
                      name="benchmark", log_path=log, writer=None if jsonl else TerminalWriter(prog, log))
    if jsonl:
        return code
    summary_path = run_dir / "summary.json"
    if code in (ExitCode.OK, ExitCode.STOPPED) and summary_path.is_file():
        print(describe_summary(json.loads(summary_path.read_text(encoding="utf-8"))))
        print(f"Results: {run_dir}")
    if code == ExitCode.STOPPED:
        print(f"{prog}: stopped; resume with the same command plus --resume", file=sys.stderr)
    return code


def _cmd_run(args: argparse.Namespace, prog: str) -> ExitCode:
    from bench.config import BenchConfig, ConfigError

    try:
        config = BenchConfig.load(args.config)
    except ConfigError as exc:
        if args.jsonl:
            from medalpaca_desktop.core.events import Done, Error, EventWriter

            writer = EventWriter(sys.stdout)
            writer.emit(Error(message=str(exc), kind="config"))
            writer.emit(Done(ok=False))
        return _fail(prog, str(exc))
    return execute(config, resume=args.resume, jsonl=args.jsonl, prog=prog)


def _cmd_rescore(args: argparse.Namespace, prog: str) -> ExitCode:
    from bench.results import RunError, rescore_run
    from bench.run import describe_summary

    try:
        summary = rescore_run(args.run_dir, args.rule)
    except RunError as exc:
        return _fail(prog, str(exc))
    _rescore_db(Path(args.run_dir), summary)
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(describe_summary(summary))
    return ExitCode.OK


def _rescore_db(run_dir: Path, summary: dict[str, Any]) -> None:
    """Keep the app database's copy in step with the re-scored run (when it has one)."""
    try:
        from bench.results import read_items, store_item
        from medalpaca_desktop.core.store import Store

        with Store() as store:
            row = store.eval_run_by_dir(str(run_dir.expanduser().resolve()))
            if row is None:
                return
            for it in read_items(run_dir):
                store_item(store, row["id"], it)
            store.update_eval_run(row["id"], accuracy=summary["scores"].get("overall", {}).get("accuracy"))
    except Exception as exc:  # noqa: BLE001 - the run folder is the record; the database is a convenience
        print(f"warning: the app database was not updated ({exc})", file=sys.stderr)


def describe_comparison(data: dict[str, Any]) -> str:
    a, b = data["run_a"], data["run_b"]
    lines = [f"A: {a['label']} ({a['run_dir']})", f"B: {b['label']} ({b['run_dir']})",
             f"Questions both scored: {data.get('n_shared', 0)}"]
    if data.get("n_shared"):
        low, high = data.get("diff_ci") or (None, None)
        lines += [f"Accuracy A {100 * data['acc_a']:.1f} %, B {100 * data['acc_b']:.1f} %, "
                  f"difference A-B {100 * data['diff']:+.1f} points"
                  + (f" (95 % bootstrap CI {100 * low:+.1f} to {100 * high:+.1f})"
                     if low is not None and high is not None else ""),
                  f"Only A right: {data.get('b')}, only B right: {data.get('c')}; "
                  f"McNemar p = {data.get('p_value'):.4g}"]
    return "\n".join(lines)


def _cmd_compare(args: argparse.Namespace, prog: str) -> ExitCode:
    from bench.results import RunError, compare_runs

    try:
        data = compare_runs(args.run_a, args.run_b)
    except RunError as exc:
        return _fail(prog, str(exc))
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else describe_comparison(data))
    return ExitCode.OK


def build_parser(prog: str = "python -m bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="MedAlpaca Desktop benchmark engine")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="run (or resume) a benchmark from a config file; JSON-line events on stdout")
    run.add_argument("config", help="the run's YAML config (RUN_DIR/config.yaml reproduces a run)")
    run.add_argument("--resume", action="store_true",
                     help="score only the questions not yet in RUN_DIR/items.jsonl (automatic when it exists)")
    run.add_argument("--jsonl", action="store_true",
                     help="print events as JSON lines (always on for python -m bench; else a progress line)")
    run.set_defaults(func=_cmd_run)
    rescore = sub.add_parser("rescore", help="re-score a generate run's saved answers with another rule")
    rescore.add_argument("run_dir", help="the run folder")
    rescore.add_argument("--rule", required=True, choices=("paper", "lenient"),
                         help="paper: the answer starts with the right letter; lenient: also (B), 'The answer is "
                              "B', the option's text")
    rescore.add_argument("--json", action="store_true", help="print the new summary as JSON")
    rescore.set_defaults(func=_cmd_rescore)
    compare = sub.add_parser("compare", help="paired comparison of two runs on the questions both scored")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument("--json", action="store_true", help="machine-readable output")
    compare.set_defaults(func=_cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench", events: bool = True) -> ExitCode:
    """`events`: `run` always prints JSON-line events (the GUI's worker); medalpaca bench passes False."""
    args = build_parser(prog).parse_args(argv)
    if events and args.action == "run":
        args.jsonl = True
    try:
        return args.func(args, prog)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted", ExitCode.STOPPED)
    except BrokenPipeError:
        return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
