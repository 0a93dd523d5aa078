"""`python -m bench run CONFIG [--resume]`, `rescore RUN_DIR --rule R`, `compare RUN_A RUN_B [--json]`,
`suite --model M --tasks multimedqa,usmle --out DIR`, `table DIR`, `suite-compare DIR MODEL_A MODEL_B`,
`contamination RUN_DIR --against TRAIN_FILE [--meadow KEY] [--ngram 13] [--json|--jsonl]`.

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

ACTIONS = ("run", "rescore", "compare", "suite", "table", "suite-compare", "contamination", "verify")


def _fail(prog: str, message: str, code: ExitCode = ExitCode.BAD_INPUT) -> ExitCode:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def execute(config: Any, *, resume: bool, jsonl: bool, prog: str) -> ExitCode:
    """Run a validated BenchConfig: events on stdout (jsonl) or a progress line and a table (terminal)."""
    from bench.run import describe_summary, run_job
    from bench.shard import current_shard
    from medalpaca_desktop.core.worker import TerminalWriter, run_worker

    run_dir = Path(config.out).expanduser()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(prog, f"out: cannot create {run_dir} ({exc.strerror or exc})")
    shard = current_shard()
    if config.num_processes > 1 and shard is None:
        return _launch(config, run_dir, resume=resume, jsonl=jsonl, prog=prog)
    log = run_dir / "events.jsonl"
    terminal = None if jsonl else sys.stderr
    from medalpaca_desktop.core.events import EventWriter

    writer: EventWriter | None = None if jsonl else TerminalWriter(prog, log)
    if shard is not None and not shard.is_main:  # only rank 0 speaks on stdout; the others keep a log
        writer, terminal = EventWriter(None, run_dir / f"events.rank{shard.rank}.jsonl"), None
    code = run_worker(lambda worker: run_job(config, resume=resume, writer=worker.writer, stop=worker.stop,
                                             terminal=terminal),
                      name="benchmark", log_path=log, writer=writer)
    if shard is not None:
        return code
    if jsonl:
        return code
    summary_path = run_dir / "summary.json"
    if code in (ExitCode.OK, ExitCode.STOPPED) and summary_path.is_file():
        print(describe_summary(json.loads(summary_path.read_text(encoding="utf-8"))))
        print(f"Results: {run_dir}")
    if code == ExitCode.STOPPED:
        print(f"{prog}: stopped; resume with the same command plus --resume", file=sys.stderr)
    return code


def _launch(config: Any, run_dir: Path, *, resume: bool, jsonl: bool, prog: str) -> ExitCode:
    """`num_processes` > 1: the same run in N processes through accelerate (bench/shard.py)."""
    from bench.shard import run_launched

    code = run_launched(config, run_dir, resume=resume)
    summary_path = run_dir / "summary.json"
    if not jsonl and code in (ExitCode.OK, ExitCode.STOPPED) and summary_path.is_file():
        from bench.run import describe_summary

        print(describe_summary(json.loads(summary_path.read_text(encoding="utf-8"))))
        print(f"Results: {run_dir}")
    try:
        return ExitCode(code)
    except ValueError:
        return ExitCode.FAILED


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



def _cmd_suite(args: argparse.Namespace, prog: str) -> ExitCode:
    from bench.config import PRESETS, SETTING_FLAGS, ConfigError
    from bench.suite import plan_suite, write_table
    from bench.suite_run import run_suite
    from medalpaca_desktop.core.worker import TerminalWriter, run_worker

    settings = dict(PRESETS[args.preset]) if args.preset else {}
    settings.update({k: getattr(args, k) for k in SETTING_FLAGS if getattr(args, k) is not None})
    try:
        plan = plan_suite(args.model, args.tasks, args.out, settings, labels=args.label)
    except ConfigError as exc:
        return _fail(prog, str(exc))
    out = Path(plan.out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(prog, f"out: cannot create {out} ({exc.strerror or exc})")
    log = out / "suite_events.jsonl"
    terminal = None if args.jsonl else sys.stderr
    code = run_worker(lambda worker: run_suite(plan, writer=worker.writer, stop=worker.stop, terminal=terminal,
                                               resume=args.resume),
                      name="benchmark suite", log_path=log, writer=None if args.jsonl else TerminalWriter(prog, log))
    if not args.jsonl and (out / "suite.json").is_file():
        print(write_table(out).describe())
        print(f"Results: {out} (suite_table.csv, suite_table.json; one folder per model and task)")
    return code


def _cmd_table(args: argparse.Namespace, prog: str) -> ExitCode:
    from bench.config import ConfigError
    from bench.suite import suite_table

    try:
        table = suite_table(args.out)
    except ConfigError as exc:
        return _fail(prog, str(exc))
    if args.json:
        print(json.dumps(table.to_dict(), indent=2))
    elif args.csv:
        print(table.to_csv(), end="")
    else:
        print(table.describe())
    return ExitCode.OK


def _cmd_suite_compare(args: argparse.Namespace, prog: str) -> ExitCode:
    from bench.config import ConfigError
    from bench.suite import compare_suite, describe_suite_comparison

    try:
        data = compare_suite(args.out, args.model_a, args.model_b)
    except ConfigError as exc:
        return _fail(prog, str(exc))
    print(json.dumps(data, indent=2) if args.json else describe_suite_comparison(data))
    return ExitCode.OK


CONTAMINATION_STAGE = "Reading training data"


def _check_contamination(args: argparse.Namespace, progress: Any) -> list[Any]:
    """Every source checked first, then the run (or each run of a suite) against them in one pass."""
    from bench.contamination import check_run, check_suite, is_suite, resolve_sources

    sources = resolve_sources(args.against, args.meadow)
    if is_suite(args.run_dir):
        return check_suite(args.run_dir, sources, args.ngram, progress)
    return [check_run(args.run_dir, sources, args.ngram, progress)]


def _contamination_events(args: argparse.Namespace) -> ExitCode:
    """--jsonl: progress events, a `result` naming each run's report, `done`; bad input an `error` event
    and exit code 2; the first stop signal ends the check at once (nothing is written before the end)."""
    from bench.contamination import REPORT, SUMMARY_CLEAN, ContaminationError
    from medalpaca_desktop.core.events import Done, Error, Result
    from medalpaca_desktop.core.progress import ProgressReporter
    from medalpaca_desktop.core.worker import Worker, run_worker

    def job(worker: Worker) -> ExitCode:
        reporter = ProgressReporter(CONTAMINATION_STAGE, None, "records", events=worker.writer)

        def progress(done: int, total: int | None) -> None:
            reporter.total = total
            reporter.update(done, force=done == total)

        try:
            reports = _check_contamination(args, progress)
        except ContaminationError as exc:
            worker.emit(Error(message=str(exc), kind="bad_input"))
            worker.emit(Done(ok=False))
            return ExitCode.BAD_INPUT
        runs = [{"run_dir": r.run_dir, "report": str(Path(r.run_dir) / REPORT),
                 "summary_clean": str(Path(r.run_dir) / SUMMARY_CLEAN), "n_questions": r.n_questions,
                 "overlapping": len(r.overlapping), "accuracy": r.accuracy} for r in reports]
        worker.emit(Result(data={"kind": "contamination", "runs": runs, "records": reports[0].records,
                                 "elapsed_s": reports[0].elapsed_s}))
        worker.emit(Done(ok=True))
        return ExitCode.OK

    return run_worker(job, name="contamination check", interrupt=True)


def _cmd_contamination(args: argparse.Namespace, prog: str) -> ExitCode:
    from bench.contamination import ContaminationError, describe, is_suite
    from medalpaca_desktop.core.progress import ProgressReporter

    if args.jsonl:
        return _contamination_events(args)
    reporter = ProgressReporter(CONTAMINATION_STAGE, None, "records", terminal=sys.stderr, min_interval=0.5)
    shown: list[bool] = []  # a progress line is on the terminal

    def progress(done: int, total: int | None) -> None:
        reporter.total = total
        reporter.update(done)
        shown[:] = [True]

    try:
        reports = _check_contamination(args, progress)
    except ContaminationError as exc:
        if shown:
            sys.stderr.write("\n")
        return _fail(prog, str(exc))
    first = reports[0]
    rate = f", {first.records / first.elapsed_s:,.0f} records/s" if first.elapsed_s > 0 else ""
    reporter.finish(f"{first.records:,} records in {first.elapsed_s:.1f} s{rate}")
    if args.json:
        data = [r.to_dict() for r in reports]
        print(json.dumps(data if len(reports) > 1 or is_suite(args.run_dir) else data[0], indent=2,
                         ensure_ascii=False))
        return ExitCode.OK
    for report in reports:
        if len(reports) > 1:
            print(f"{report.run_dir}:")
        print(describe(report))
        print(f"Report: {Path(report.run_dir) / 'contamination.json'}")
    return ExitCode.OK


def _add_contamination_parser(sub: Any) -> None:
    from bench.contamination import DEFAULT_NGRAM

    c = sub.add_parser("contamination", help="which of a run's questions are in your training data; the accuracy "
                                             "without them",
                       description="Check a benchmark run (or every run of a suite folder) against training data: "
                                   "a question overlaps when its normalised text equals a training text field, or "
                                   "one of its 13-grams (lm-eval's decontamination) appears in one. Writes "
                                   "RUN_DIR/contamination.json and RUN_DIR/summary_clean.json (the summary "
                                   "without the overlapping questions).")
    c.add_argument("run_dir", help="the run folder (a suite folder checks each of its runs)")
    c.add_argument("--against", action="append", default=[], metavar="SOURCE",
                   help="training data as the trainer reads it: a JSON, JSONL, CSV or TSV file (FILE?instruction="
                        "COL&output=COL accepted), a folder of them, or a dataset saved with save_to_disk "
                        "(repeatable)")
    c.add_argument("--meadow", action="append", default=[], metavar="KEY",
                   help="a downloaded Medical Meadow dataset by key, e.g. medqa, cord19 (repeatable)")
    c.add_argument("--ngram", type=int, default=DEFAULT_NGRAM,
                   help=f"words per n-gram (default {DEFAULT_NGRAM}, as lm-eval)")
    c.add_argument("--json", action="store_true", help="print contamination.json's content")
    c.add_argument("--jsonl", action="store_true", help="print progress as JSON-line events on stdout (the app's "
                                                         "worker); the reports are written as without it")
    c.set_defaults(func=_cmd_contamination)


def _add_suite_parsers(sub: Any) -> None:
    from bench.config import PRESETS, add_setting_flags

    s = sub.add_parser("suite", help="several models x several tasks of the medical suite, one run per pair",
                       description="Score models on the medical benchmark suite (tasks of resources/"
                                   "benchmark_tasks.yaml, or groups: multimedqa, usmle, all). Each model x task is "
                                   "an ordinary run in OUT/MODEL/TASK (resumable on its own); the table goes to "
                                   "OUT/suite_table.csv and .json. Download the tasks first (Benchmark tab, or "
                                   "medalpaca download --dataset ...).")
    s.add_argument("--model", action="append", required=True, help="a .gguf file or HF model folder (repeatable)")
    s.add_argument("--label", action="append", help="display name per --model, in the same order (repeatable)")
    s.add_argument("--tasks", required=True, help="comma list of tasks and groups, e.g. multimedqa,usmle")
    s.add_argument("--out", required=True, help="the suite's folder")
    s.add_argument("--preset", choices=tuple(PRESETS), help="start from a protocol (other flags override it)")
    add_setting_flags(s)
    s.add_argument("--resume", action="store_true", help="continue each run where it stopped (automatic when "
                                                           "a run folder has results)")
    s.add_argument("--jsonl", action="store_true", help="print progress as JSON-line events on stdout")
    s.set_defaults(func=_cmd_suite)
    t = sub.add_parser("table", help="the models x tasks table of a suite folder")
    t.add_argument("out", help="the suite's folder")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    t.add_argument("--csv", action="store_true", help="CSV output")
    t.set_defaults(func=_cmd_table)
    c = sub.add_parser("suite-compare", help="paired comparison of two models of a suite, per task and overall")
    c.add_argument("out", help="the suite's folder")
    c.add_argument("model_a")
    c.add_argument("model_b")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=_cmd_suite_compare)


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
    _add_suite_parsers(sub)
    _add_contamination_parser(sub)
    v = sub.add_parser("verify", help="is a model as good as another (a quantization as its original)? the same "
                                      "N questions on both, paired",
                       description="Score N questions of a task (or a questions file), drawn with the seed, on "
                                   "both models, log-likelihood with lm-eval's prompt, as two runs in "
                                   "OUT/reference and OUT/candidate, and compare them: both accuracies, the "
                                   "paired difference with its 95 % interval and McNemar's p; a warning when the "
                                   "candidate is significantly worse.")
    v.add_argument("--reference", required=True, help="the original: a Hugging Face model folder or a .gguf file")
    v.add_argument("--adapter", help="a LoRA adapter on the reference (transformers)")
    v.add_argument("--candidate", required=True, help="the model checked against it (a merge, a GGUF export)")
    v.add_argument("--questions", required=True, metavar="TASK[:N]", help="a suite task or questions file, and "
                                                                          "how many (default 200)")
    v.add_argument("--out", required=True, help="the folder both runs are written to (resumed when it has them)")
    v.add_argument("--json", action="store_true", help="print the comparison as JSON")
    v.add_argument("--jsonl", action="store_true", help="JSON-line events on stdout (progress of both runs, the "
                                                        "comparison as the result event): what the GUI reads")
    v.set_defaults(func=_cmd_verify)
    return parser


def model_label(model: str, adapter: str | None = None) -> str:
    """A model's name for the verdict: its file or folder name (and the adapter's)."""
    name = Path(model).name or model
    return f"{name} + {Path(adapter).name}" if adapter else name


def _cmd_verify(args: argparse.Namespace, prog: str) -> ExitCode:
    from bench.config import ConfigError
    from bench.run import BadInput
    from bench.verify import parse_verify, verify
    from medalpaca_desktop.core.events import Done, Error, Result
    from medalpaca_desktop.core.worker import TerminalWriter, run_worker

    result: dict[str, Any] = {}
    labels = (model_label(args.reference, args.adapter), model_label(args.candidate))
    if labels[0] == labels[1]:
        labels = (f"{labels[0]} (reference)", f"{labels[1]} (candidate)")

    def job(worker: Any) -> ExitCode:
        try:
            task, n = parse_verify(args.questions)
            result.update(verify(args.reference, args.candidate, task, n, args.out, reference_adapter=args.adapter,
                                 writer=worker.writer if args.jsonl else None, stop=worker.stop, labels=labels))
        except (ConfigError, BadInput, RuntimeError) as exc:
            if args.jsonl:
                worker.emit(Error(message=str(exc), kind="bad_input" if not isinstance(exc, RuntimeError)
                                  else "failed"))
                worker.emit(Done(ok=False))
                return ExitCode.BAD_INPUT if not isinstance(exc, RuntimeError) else ExitCode.FAILED
            return _fail(prog, str(exc))
        if args.jsonl:
            worker.emit(Result(data={**result, "labels": list(labels)}))
            worker.emit(Done(ok=True))
        return ExitCode.OK

    code = run_worker(job, name="verify", writer=None if args.jsonl else TerminalWriter(prog))
    if code == ExitCode.OK and result and not args.jsonl:
        print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else result["verdict"])
    return code


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
