"""The benchmark job: load questions and model, score each question, write the run directory.

A batch of questions per forward pass in both modes where the engine batches
(transformers; llama.cpp answers one at a time); in generate mode (the paper's
protocol) an answer does not depend on its batch. Each scored question is
appended to items.jsonl (flushed) and sent as a `result` event before the next
one starts, so a stopped or crashed run loses nothing and resumes with exactly
the questions that are not in items.jsonl yet, in dataset order (on a batching
backend, in either mode: in batches of similar prompt lengths, longest first, as
lm-eval does; the summary and items.csv are in dataset order). SIGINT/SIGTERM
end the current question or batch (answers already finished are kept, the
rest are asked again on resume), write a partial summary and exit 130;
a second signal leaves at once (core.worker.run_worker installs the handlers).
Events (docs/ARCHITECTURE.md): Started, Progress load/eval, Metric, Result per
item, Done; Error for bad input, exit 2. The run records itself in the app
database's eval_runs (core.run_rows).
"""

from __future__ import annotations

import dataclasses
import os
import random
import threading
import traceback
from pathlib import Path
from typing import IO, Any

from bench import results
from bench.config import BenchConfig, ConfigError
from bench.questions import Question
from bench.record import build_record, now_iso
from medalpaca_desktop.core.disk_full import DISK_FULL_KIND, disk_full_message, is_disk_full
from medalpaca_desktop.core.events import Done, Error, EventWriter, Log, Metric, Progress, Started, Warning
from medalpaca_desktop.core.jobs import ExitCode, RunStatus
from medalpaca_desktop.core.payloads import Item, parse_payload
from medalpaca_desktop.core.progress import ProgressReporter
from medalpaca_desktop.core.run_rows import RunRow
from medalpaca_desktop.core.worker import describe_exception

#: Fields whose change makes saved items incomparable: a resumed run must keep them.
RESULT_FIELDS = ("model", "adapter", "quantization", "task", "dataset", "data", "mapping", "mode", "prompt_style",
                 "apply_chat_template", "temperature", "top_p", "top_k", "greedy", "max_new_tokens", "seed",
                 "sample")


class BadInput(Exception):
    """The config, the questions or the model cannot be used; one message for a person."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def step_title(step: str) -> str:
    """'step1' -> 'Step 1', 'step2&3' -> 'Step 2&3'."""
    return f"Step {step[4:]}" if step.startswith("step") else (step or "All")


class EvalProgress(ProgressReporter):
    """Progress over the whole dataset; rate and ETA from this session's questions only (resume-proof)."""

    def __init__(self, total: int, already: int, events: EventWriter | None, terminal: IO[str] | None) -> None:
        super().__init__("eval", total, "questions", events=events, terminal=terminal, min_interval=0.2)
        self.current = already
        self._already = already
        self.extra: dict[str, Any] = {}

    def snapshot(self, message: str = "") -> Progress:
        elapsed = self.elapsed
        done_here = self.current - self._already
        rate = done_here / elapsed if elapsed > 0 and done_here > 0 else None
        eta = max(0.0, (self.total - self.current) / rate) if rate and self.total is not None else None
        return Progress(stage=self.stage, current=self.current, total=self.total, unit=self.unit, rate=rate,
                        eta_s=eta, message=message, extra=dict(self.extra))


class ModelCache:
    """The last model a benchmark loaded, kept for the next run on the same model (a suite's tasks).

    The owner closes it when the last run is done; a run never unloads a cached model itself.
    """

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.backend: Any = None
        self.loaded: Any = None

    def get(self, key: tuple[Any, ...]) -> tuple[Any, Any] | None:
        return (self.backend, self.loaded) if self.key == key and self.backend is not None else None

    def put(self, key: tuple[Any, ...], backend: Any, loaded: Any) -> None:
        if self.backend is not None and self.backend is not backend:
            self.close()
        self.key, self.backend, self.loaded = key, backend, loaded

    def close(self) -> None:
        if self.backend is not None:
            try:
                self.backend.unload()
            except Exception:  # noqa: BLE001 - unloading is best effort at the end
                pass
        self.key, self.backend, self.loaded = None, None, None


def choose_questions(questions: list[Question], count: int, seed: int) -> list[Question]:
    """`count` of the questions (all when 0 or more than there are), drawn with `seed`, in dataset order."""
    if count <= 0 or count >= len(questions):
        return list(questions)
    picked = sorted(random.Random(seed).sample(range(len(questions)), count))
    return [questions[i] for i in picked]


def load_questions(config: BenchConfig) -> Any:
    """The run's questions (a bench.datasets.LoadedDataset): its suite task's or its data file's, checked;
    BadInput (one sentence) when they cannot be scored. The benchmark and the contamination check read them so."""
    from bench.datasets import DatasetError, load_dataset
    from bench.tasks import TaskError, load_task

    try:
        spec = config.task_spec()
        if spec is not None:
            dataset = load_task(spec, config.data or None, limit=config.limit or None)
        else:
            dataset = load_dataset(config.data, config.dataset, mapping=config.mapping or None,
                                   skip_malformed=config.skip_malformed, limit=config.limit or None)
    except (DatasetError, TaskError) as exc:
        raise BadInput(str(exc), "dataset") from None
    if config.sample:
        dataset = dataclasses.replace(dataset, questions=choose_questions(dataset.questions, config.sample,
                                                                          config.seed))
    ids = [q.id for q in dataset.questions]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise BadInput(f"data: question id {dup!r} appears more than once in {config.data}; ids must be "
                       "unique so that a run can resume", "dataset")
    if not dataset.questions:
        raise BadInput(f"data: {config.data} has no questions to score "
                       f"({sum(dataset.excluded_counts().values())} need an image)", "dataset")
    return dataset


def run_job(config: BenchConfig, *, resume: bool = False, writer: EventWriter | None = None,
            stop: threading.Event | None = None, terminal: IO[str] | None = None,
            record_in_store: bool = True, models: ModelCache | None = None) -> ExitCode:
    """Run one benchmark; every outcome ends with a `done` event. Returns the exit code.

    `models`: keep the loaded model there (and take it from there) instead of loading and unloading it.
    """
    writer = writer or EventWriter(None)
    stop = stop or threading.Event()
    job = _Job(config, writer, stop, terminal, record_in_store, models)
    try:
        return job.run(resume)
    except BadInput as exc:
        writer.emit(Error(message=str(exc), kind=exc.kind))
        job.row.finish(RunStatus.FAILED, error=str(exc))
        writer.emit(Done(ok=False, data={"run_dir": str(job.run_dir)}))
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:  # a second SIGINT/SIGTERM: leave now; items.jsonl has every finished question
        job.row.finish(RunStatus.STOPPED, error="interrupted")
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one error event
        message = describe_exception(exc)
        kind = getattr(exc, "kind", "error")
        if is_disk_full(exc, job.run_dir if job.run_dir.is_dir() else None):
            message = disk_full_message(job.run_dir, "the benchmark's results", then="resume the run (--resume)",
                                        kept="every question scored so far is kept in items.jsonl")
            kind = DISK_FULL_KIND
        writer.emit(Error(message=message, kind=kind, detail=traceback.format_exc()[-4000:]))
        job.row.finish(RunStatus.FAILED, error=message)
        writer.emit(Done(ok=False, data={"run_dir": str(job.run_dir)}))
        return ExitCode.FAILED
    finally:
        job.close()


class _Job:
    def __init__(self, config: BenchConfig, writer: EventWriter, stop: threading.Event,
                 terminal: IO[str] | None, record_in_store: bool, models: ModelCache | None = None) -> None:
        self.config = config
        self.models = models
        self.run_dir = Path(config.out).expanduser() if config.out else Path(".")
        self.writer = writer
        self.stop = stop
        self.terminal = terminal
        from bench.shard import current_shard, rank_items

        self.shard = current_shard()
        self.record_in_store = record_in_store and (self.shard is None or self.shard.is_main)
        self.items_path = rank_items(self.run_dir, self.shard.rank) if self.shard else self.run_dir / results.ITEMS
        self._others_seen = (0.0, 0)
        self.row = RunRow("eval", writer.emit)
        self.backend: Any = None

    # ------------------------------------------------------------------ the job

    def run(self, resume: bool) -> ExitCode:
        config = self.config
        try:
            config.validate(check_paths=True)
        except ConfigError as exc:
            raise BadInput(str(exc), "config") from None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        from bench.shard import done_marker, rank_files

        if self.shard is not None:
            done_marker(self.run_dir, self.shard.rank).unlink(missing_ok=True)
        had_items = (self.run_dir / results.ITEMS).is_file() or bool(rank_files(self.run_dir))
        if had_items:
            self._check_same_run()
        elif resume:
            self.writer.emit(Warning(message=f"--resume: {self.run_dir} has no scored questions yet; starting "
                                             "from the first question"))
        try:
            existing = self._existing_items() if had_items else []
        except results.RunError as exc:
            raise BadInput(f"{exc}; move it aside or choose another --out folder", "run_dir") from None
        dataset = self._load_questions()
        questions = dataset.questions
        if self.shard is None or self.shard.is_main:
            config.save(self.run_dir / results.CONFIG)

        by_id = {q.id: q for q in questions}
        done = [it for it in existing if str(it.get("id")) in by_id]
        done_ids = {str(it["id"]) for it in done}
        remaining = [(pos, q) for pos, q in enumerate(questions) if q.id not in done_ids]
        if self.shard is not None:  # every rank computes the same list and takes its share
            remaining = self.shard.take(remaining)
        counts = dataset.counts()
        self._open_db()
        self._db_catch_up(done)
        started_at = now_iso()
        previous = self._previous_record()
        sessions = list(previous.get("sessions") or []) + [{"started_at": started_at, "resumed_with": len(done)}]
        self.writer.emit(Started(job="bench", info={
            "run_dir": str(self.run_dir), "total": len(questions), "counts": counts, "label": config.display_label,
            "done": len(done), "remaining": len(remaining), "mode": config.mode, "prompt_style": config.prompt_style,
            "excluded": dataset.excluded_counts(), "skipped_records": len(dataset.problems)}))
        self._dataset_notes(dataset)
        if done:
            self.writer.emit(Log(message=f"Resuming: {len(done)} of {len(questions)} questions already scored, "
                                         f"{len(remaining)} to go"))

        loaded = None
        prompt_info = None
        if remaining and not self.stop.is_set():
            loaded = self._load_model()
            prompt_info = self._prompt_info(loaded) if config.apply_chat_template else None
        template, fallback = self._template_name(questions, prompt_info)
        record = build_record(config, dataset, loaded=loaded, template=template, chat_fallback=fallback,
                              started_at=previous.get("started_at") or started_at, sessions=sessions)
        if loaded is None and previous:  # nothing left to score: keep what the earlier session knew
            record.update({k: previous[k] for k in ("backend", "device", "quantization", "context_length")
                           if previous.get(k) is not None})
        if fallback:
            self.writer.emit(Warning(message=f"The model has no chat template; the {fallback} format stands in."))

        reporter = EvalProgress(len(questions), len(done), self.writer, self.terminal)
        items = list(done)
        if remaining and not self.stop.is_set():
            score = self._score_generate if config.mode == "generate" else self._score_loglikelihood
            score(remaining, prompt_info, items, counts, reporter)
        if self.shard is not None:
            if not self.shard.is_main:
                return self._end_rank()
            items += self._merge_ranks(by_id, {str(it["id"]) for it in items})
        stopped = self.stop.is_set() and len(items) < len(questions)
        return self._finish(questions, items, counts, record, stopped, reporter)

    # ------------------------------------------------------------------ inputs

    def _check_same_run(self) -> None:
        """An out folder holding another run's items must not be mixed with this one."""
        saved = self.run_dir / results.CONFIG
        if not saved.is_file():
            return
        try:
            old = BenchConfig.from_dict(results.load_run(self.run_dir).config)
        except (ConfigError, results.RunError) as exc:
            raise BadInput(f"out: {self.run_dir} holds a run whose config cannot be read ({exc}); choose another "
                           "folder", "config") from None
        for name in RESULT_FIELDS:
            a, b = getattr(old, name), getattr(self.config, name)
            if name in ("model", "adapter", "data") and a and b:
                a, b = str(Path(a).expanduser().resolve()), str(Path(b).expanduser().resolve())
            if a != b:
                raise BadInput(f"out: {self.run_dir} already holds a run with {name} = {getattr(old, name)!r} "
                               f"(now {getattr(self.config, name)!r}); choose another --out folder to start a "
                               "new run", "config")

    def _load_questions(self) -> Any:
        return load_questions(self.config)

    def _dataset_notes(self, dataset: Any) -> None:
        """What was left out, said right after `started`."""
        excluded = sum(dataset.excluded_counts().values())
        if excluded:
            per_step = ", ".join(f"{step_title(s)}: {n}" for s, n in dataset.excluded_counts().items())
            self.writer.emit(Log(message=f"Left out {excluded} questions that need an image ({per_step}); "
                                         f"lists from {dataset.exclusion_source or 'the dataset'}"))
        if dataset.problems:
            self.writer.emit(Warning(message=f"Skipped {len(dataset.problems)} malformed records (first: "
                                             f"{dataset.problems[0]})"))

    def _load_model(self) -> Any:
        from medalpaca_desktop.core.chat_protocol import LoadSpec
        from medalpaca_desktop.inference.base import BAD_INPUT_KINDS, InferenceError, create_backend

        config = self.config
        spec = LoadSpec(model=str(Path(config.model).expanduser()), backend=config.resolved_backend(),
                        adapter=str(Path(config.adapter).expanduser()) if config.adapter else None,
                        load_in=config.quantization, n_ctx=config.n_ctx, n_gpu_layers=config.gpu_layers)
        if self.shard is not None:
            spec = self._shard_placement(spec)
        key = (spec.model, spec.backend, spec.adapter, spec.load_in, spec.n_ctx, spec.n_gpu_layers)
        cached = self.models.get(key) if self.models is not None else None
        if cached is not None:
            self.backend, loaded = cached
            self.writer.emit(Log(message=f"Using {loaded.path}, already loaded ({loaded.backend}, {loaded.device})"))
            return loaded

        def progress(message: str, fraction: float | None) -> None:
            self.writer.emit(Progress(stage="load", current=fraction or 0.0, total=1.0, message=message))
            if self.terminal is not None:
                self.terminal.write(f"\rLoading {Path(config.model).name}: {message}\x1b[K")
                self.terminal.flush()

        try:
            self.backend = create_backend(spec.backend)
            loaded = self.backend.load(spec, progress)
        except InferenceError as exc:
            if exc.kind in BAD_INPUT_KINDS:
                raise BadInput(str(exc), f"model_{exc.kind}") from None
            raise
        finally:
            if self.terminal is not None:
                self.terminal.write("\n")
        for note in loaded.notes:
            self.writer.emit(Warning(message=note))
        self.writer.emit(Log(message=f"Loaded {loaded.path} ({loaded.backend}, {loaded.device}, context "
                                     f"{loaded.context_length})"))
        if self.models is not None:
            self.models.put(key, self.backend, loaded)
        return loaded

    def _prompt_info(self, loaded: Any) -> Any:
        from medalpaca_desktop.core.prompts import ModelPromptInfo

        knows_chatml = len(self.backend.tokenize("<|im_start|>", add_special=False)) == 1
        return ModelPromptInfo(chat_template=loaded.chat_template, bos_token=loaded.bos_token,
                               eos_token=loaded.eos_token, knows_chatml=knows_chatml)

    def _template_name(self, questions: list[Question], prompt_info: Any) -> tuple[str, str | None]:
        from bench.prompts import build_prompt

        if not self.config.apply_chat_template:
            return self.config.prompt_style, None
        if prompt_info is None:
            return "chat", None
        prompt = build_prompt(questions[0], self.config.mode, self.config.prompt_style, prompt_info,
                              self.config.task_spec())
        return prompt.template, prompt.chat_fallback

    # ------------------------------------------------------------------ scoring

    def _score_generate(self, remaining: list[tuple[int, Question]], prompt_info: Any,
                        items: list[dict[str, Any]], counts: dict[str, int], reporter: EvalProgress) -> None:
        from bench.scoring import generate_items, longest_first

        size = self._batch_size()
        if size > 1:  # rows of similar lengths enter together and pad the least (lm-eval's order too)
            remaining = longest_first(self.backend, remaining, self.config, prompt_info)
        # One call: a finished answer's slot takes the next question; each item is saved as it ends,
        # and answers a stop cut short are left for the resume.
        generate_items(self.backend, remaining, self.config, prompt_info, self.stop.is_set,
                       on_item=lambda item: self._add(item, items, counts, reporter), slots=size)

    def _score_loglikelihood(self, remaining: list[tuple[int, Question]], prompt_info: Any,
                             items: list[dict[str, Any]], counts: dict[str, int], reporter: EvalProgress) -> None:
        from bench.scoring import loglikelihood_items, longest_first

        size = self._batch_size()
        if size > 1:  # a batch holds prompts of about one length (lm-eval's order), so little is padding
            remaining = longest_first(self.backend, remaining, self.config, prompt_info, "loglikelihood")
        for start in range(0, len(remaining), size):
            if self.stop.is_set():
                return
            chunk = [q for _, q in remaining[start:start + size]]
            for item in loglikelihood_items(self.backend, chunk, self.config, prompt_info, self.stop.is_set):
                self._add(item, items, counts, reporter)

    def _batch_size(self) -> int:
        """The config's batch size where the engine batches; one at a time otherwise (as fast, and a stop
        loses at most one question's work)."""
        return self.config.batch_size if self.backend.batches else 1

    def _add(self, item: dict[str, Any], items: list[dict[str, Any]], counts: dict[str, int],
             reporter: EvalProgress) -> None:
        """Append to items.jsonl (flushed), tell the GUI, record in the database, report progress."""
        with open(self.items_path, "a", encoding="utf-8") as fh:
            fh.write(results.item_line(item))
            fh.flush()
        items.append(item)
        row = parse_payload({**{k: v for k, v in item.items() if k != "prompt"}, "kind": "item"})
        assert isinstance(row, Item)  # bench.scoring writes every field an Item has
        self.writer.emit(row.to_result())
        self._db_item(item)
        correct = sum(1 for it in items if it.get("correct"))
        accuracy = correct / len(items)
        step = item.get("step", "")
        in_step = sum(1 for it in items if it.get("step", "") == step)
        reporter.extra = {"accuracy": accuracy, "correct": correct, "step": step}
        reporter.update(len(items) + self._others_done(),
                        f"{step_title(step)} · {in_step}/{counts.get(step, in_step)} · acc {100 * accuracy:.1f} %",
                        force=len(items) == reporter.total)
        self.writer.emit(Metric(step=len(items), values={"accuracy": accuracy}))

    # ------------------------------------------------------------------ the end

    def _finish(self, questions: list[Question], items: list[dict[str, Any]], counts: dict[str, int],
                record: dict[str, Any], stopped: bool, reporter: EvalProgress) -> ExitCode:
        order = {q.id: i for i, q in enumerate(questions)}
        items = sorted(items, key=lambda it: order.get(str(it["id"]), len(order)))
        complete = len(items) == len(questions)
        record["finished_at"] = now_iso()
        record["sessions"][-1]["finished_at"] = record["finished_at"]
        record["sessions"][-1]["scored"] = len(items) - record["sessions"][-1]["resumed_with"]
        summary = results.build_summary(self.config.to_dict(), items, n_total=len(questions), complete=complete,
                                        record=record, counts=counts)
        results.write_items_csv(self.run_dir, items)
        results.write_summary(self.run_dir, summary)
        if self.terminal is not None and reporter.current > 0:
            reporter.finish(f"{len(items)}/{len(questions)} scored")
        overall = summary["scores"].get("overall", {})
        self.row.finish(RunStatus.STOPPED if stopped else RunStatus.DONE, accuracy=overall.get("accuracy"),
                        n_items=len(items))
        self.writer.emit(Done(ok=not stopped, stopped=stopped,
                              data={"summary": summary, "run_dir": str(self.run_dir)}))
        return ExitCode.STOPPED if stopped else ExitCode.OK

    # ------------------------------------------------------------------ several processes (bench/shard.py)

    def _existing_items(self) -> list[dict[str, Any]]:
        """items.jsonl, then what any rank's file holds beyond it; each rank repairs only its own file."""
        from bench.shard import rank_files

        main = self.shard is None or self.shard.is_main
        items = results.read_items(self.run_dir, repair=main)
        seen = {str(it["id"]) for it in items}
        for path in rank_files(self.run_dir):
            own = path == self.items_path
            for it in results.read_items(self.run_dir, repair=own, name=path.name):
                if str(it["id"]) not in seen:
                    seen.add(str(it["id"]))
                    items.append(it)
        return items

    def _shard_placement(self, spec: Any) -> Any:
        """This rank's GPU (LOCAL_RANK) where there are GPUs, else its part of the CPU cores."""
        from bench.shard import cpu_threads

        assert self.shard is not None
        try:
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except ImportError:
            gpus = 0
        if gpus:
            torch.cuda.set_device(self.shard.local_rank % gpus)
            return spec
        return dataclasses.replace(spec, n_threads=cpu_threads(self.shard.world))

    def _others_done(self) -> int:
        """Questions the other ranks scored this session (rank 0's progress counts them; read every 2 s)."""
        if self.shard is None or not self.shard.is_main:
            return 0
        import time

        from bench.shard import rank_files

        when, count = self._others_seen
        if time.monotonic() - when < 2.0:
            return count
        count = 0
        for path in rank_files(self.run_dir):
            if path != self.items_path:
                try:
                    count += path.read_bytes().count(b"\n")
                except OSError:
                    pass
        self._others_seen = (time.monotonic(), count)
        return count

    def _end_rank(self) -> ExitCode:
        """A rank other than 0: its share is on disk; rank 0 merges it and writes the summary."""
        from bench.shard import mark_done

        assert self.shard is not None
        mark_done(self.run_dir, self.shard.rank)
        stopped = self.stop.is_set()
        self.writer.emit(Done(ok=not stopped, stopped=stopped, data={"run_dir": str(self.run_dir),
                                                                     "rank": self.shard.rank}))
        return ExitCode.STOPPED if stopped else ExitCode.OK

    def _merge_ranks(self, by_id: dict[str, Question], have: set[str]) -> list[dict[str, Any]]:
        """Rank 0, its share done: wait for the others, move every rank's items into items.jsonl and the
        database, remove the rank files. Returns the items rank 0 did not have."""
        from bench.shard import WAIT_FOR_RANKS_S, clear_markers, mark_done, rank_files, wait_for_ranks

        assert self.shard is not None
        mark_done(self.run_dir, 0)
        self.writer.emit(Log(message=f"Waiting for the other {self.shard.world - 1} processes to finish their share"))
        missing = wait_for_ranks(self.run_dir, self.shard.world, self.stop)
        if missing:
            self.writer.emit(Warning(message=f"Processes {', '.join(map(str, missing))} did not finish within "
                                             f"{WAIT_FOR_RANKS_S // 3600} h (or after the stop); their questions are "
                                             "kept in their items files and a resume scores the rest"))
        in_file = {str(it["id"]) for it in results.read_items(self.run_dir)}
        to_write: list[dict[str, Any]] = []
        merged: list[dict[str, Any]] = []  # scored by the other ranks: rank 0 did not have them
        files = rank_files(self.run_dir)
        for path in files:
            for it in results.read_items(self.run_dir, name=path.name):
                key = str(it["id"])
                if key not in by_id:
                    continue
                if key not in in_file:
                    in_file.add(key)
                    to_write.append(it)
                if key not in have:
                    have.add(key)
                    merged.append(it)
        if to_write:
            with open(self.run_dir / results.ITEMS, "a", encoding="utf-8") as fh:
                for it in to_write:
                    fh.write(results.item_line(it))
                fh.flush()
                os.fsync(fh.fileno())
        self._db_catch_up(merged)
        for path in files:  # every item is in items.jsonl now; a rank still writing keeps its file
            if path == self.items_path or not missing:
                path.unlink(missing_ok=True)
        if not missing:
            clear_markers(self.run_dir)
        return merged

    def _previous_record(self) -> dict[str, Any]:
        path = self.run_dir / results.SUMMARY
        if not path.is_file():
            return {}
        try:
            import json

            return dict(json.loads(path.read_text(encoding="utf-8")).get("record") or {})
        except (ValueError, OSError, AttributeError):
            return {}

    # ------------------------------------------------------------------ database

    def _open_db(self) -> None:
        """The run's row in the app database (reused on resume), marked running with our pid."""
        if not self.record_in_store:
            return
        self.row.open(self.config.ensure_row)

    def _db_catch_up(self, done: list[dict[str, Any]]) -> None:
        """Copy into the row the items a kill left in items.jsonl only (it fell between the two writes)."""
        if not done:
            return
        known: set[str] = set()
        self.row.call(lambda store, run_id: known.update(r["item_key"] for r in store.eval_items(run_id)))
        if not self.row.active:
            return
        for item in done:
            if str(item["id"]) not in known:
                self._db_item(item)

    def _db_item(self, item: dict[str, Any]) -> None:
        from bench.results import store_item

        self.row.call(lambda store, run_id: store_item(store, run_id, item))

    def close(self) -> None:
        if self.backend is not None and (self.models is None or self.models.backend is not self.backend):
            try:
                self.backend.unload()
            except Exception:  # noqa: BLE001
                pass
        self.row.close()


def config_from_cli(values: dict[str, Any]) -> BenchConfig:
    """A BenchConfig from CLI values (None = keep the default); ConfigError on a bad value."""
    fields = {f.name for f in dataclasses.fields(BenchConfig)}
    data = {k: v for k, v in values.items() if k in fields and v is not None}
    if values.get("preset"):
        data["preset"] = values["preset"]
    return BenchConfig.from_dict(data)


def describe_summary(summary: dict[str, Any]) -> str:
    """The results as a few lines for a terminal."""
    lines = [f"{summary.get('label')}: {summary.get('mode')} · {summary.get('prompt_style')} · rule "
             f"{summary.get('rule')}" + ("" if summary.get("complete") else "  (partial: stopped)")]

    def table(scores: dict[str, Any], title: str) -> None:
        lines.append(title)
        for step, s in scores.items():
            lines.append(f"  {step_title(step) if step != 'overall' else 'Overall':<10} "
                         f"{s['correct']:>4}/{s['n']:<4} {100 * s['accuracy']:5.1f} %  "
                         f"95 % CI {100 * s['ci_low']:.1f}-{100 * s['ci_high']:.1f}  "
                         f"unparseable {s.get('unparseable', 0)}")

    table(summary.get("scores", {}), "Accuracy" + (" (acc)" if summary.get("mode") == "loglikelihood" else ""))
    if summary.get("scores_norm"):
        table(summary["scores_norm"], "Accuracy (acc_norm)")
    if summary.get("mode") == "generate":
        other = "lenient" if summary.get("rule") == "paper" else "paper"
        other_scores = (summary.get("scores_by_rule") or {}).get(other, {}).get("overall")
        if other_scores:
            lines.append(f"  rule {other}: {100 * other_scores['accuracy']:.1f} % overall")
    return "\n".join(lines)

