"""The fine-tuning job: config -> run directory with events, checkpoints and a verified final model.

Order matters for the user: the config is checked (already, by TrainConfig.load), then
the data (fails with file+line before any model loads), then the model. Checkpoints are
written to a staging folder and renamed, so a failed save never replaces the last good
one; `done` is written only after the final save has been read back. What a killed
run left half-written (a staging folder, a temp final, a folder caught between two
renames) is cleaned up at the start of the next run (clean_leftovers).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medalpaca_desktop.core.disk_full import DISK_FULL_KIND, disk_full_message, is_disk_full
from medalpaca_desktop.core.events import Done, Error, EventWriter, Log, Progress, Started, Warning
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.worker import describe_exception
from medalpaca_desktop.inference.base import BAD_INPUT_KINDS, InferenceError
from trainer.config import BenchTaskError, TrainConfig
from trainer.model_files import UnsafeCheckpointError, copy_sentencepiece_files, resolve_base_model, verify_saved

CHECKPOINTS = "checkpoints"
FINAL = "final"
STAGING = ".staging"  # inside CHECKPOINTS: a checkpoint being written
FINAL_TMP = f".{FINAL}-tmp"  # inside the run folder: the final model being written
#: Temp folders of the after-training steps (trainer/after.py): a merge being written, a merge for the GGUF.
AFTER_TEMPS = (".merged-tmp-*", ".merge-for-gguf-*")

OOM_ADVICE = ("Out of memory. Try a smaller micro_batch_size (gradient accumulation keeps the global batch), "
              "gradient_checkpointing: true, a shorter max_length, or method: qlora.")


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) when run alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


# --------------------------------------------------------------------------- saving


def _make_trainer_class():
    from transformers import Trainer
    from transformers.trainer_utils import rotate_checkpoints

    class SafeTrainer(Trainer):
        """Trainer whose checkpoints appear only when complete (staging folder + rename)."""

        _staging: str | None = None
        #: (template, eos token) written into each checkpoint as into final/ (trainer.after), so a checkpoint
        #: chosen for chat or export formats prompts as training did
        template_metadata: tuple[str, str] | None = None

        def _get_output_dir(self, trial):
            return self._staging or super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            real = super()._get_output_dir(trial)
            staging = os.path.join(real, STAGING)
            name = f"checkpoint-{self.state.global_step}"
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
                os.makedirs(staging, exist_ok=True)
            self._staging = staging
            try:
                super()._save_checkpoint(model, trial)
            except BaseException:
                if self.args.should_save:  # a half-written save (a full disk): give its space back at once
                    shutil.rmtree(staging, ignore_errors=True)
                raise
            finally:
                self._staging = None
            if not self.args.should_save:
                return
            from trainer.fsutil import replace_folder

            if self.template_metadata is not None:
                from trainer.after import write_template_metadata

                write_template_metadata(Path(staging) / name, *self.template_metadata)

            # the same step saved again (a stop right after a save step) replaces the older copy whole
            replace_folder(Path(staging) / name, Path(real) / name)
            shutil.rmtree(staging, ignore_errors=True)
            self._point_best_at(Path(real), Path(real) / name)
            rotate_checkpoints(output_dir=real, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)

        def _point_best_at(self, real: Path, saved: Path) -> None:
            """The best checkpoint by its final path: the Trainer looked for it in the staging folder, and the
            copy of its state in the checkpoint just saved must name it too (a resume checks that it exists)."""
            best_step = self.state.best_global_step
            best = real / f"checkpoint-{best_step}" if best_step else None
            self.state.best_model_checkpoint = str(best) if best is not None and best.is_dir() else None
            if (saved / "trainer_state.json").is_file():
                self.state.save_to_json(str(saved / "trainer_state.json"))

    return SafeTrainer


def save_final(model: Any, tokenizer: Any, run_dir: Path, adapter: bool, state_dict: dict | None = None) -> Path:
    """Write to a temp folder, verify, then rename over `final` (`state_dict`: gathered FSDP weights)."""
    final = run_dir / FINAL
    tmp = run_dir / FINAL_TMP
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(str(tmp))
        copy_sentencepiece_files(tokenizer, tmp)
        verify_saved(tmp, adapter)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays (and a full disk gets its space back)
        raise
    from trainer.fsutil import replace_folder

    return replace_folder(tmp, final)


def clean_leftovers(run_dir: Path) -> list[str]:
    """What a killed run left half-written: removed (or, for a folder caught mid-replace, put back).

    Called once at the start of every run, before the last checkpoint is looked for, so a
    resume never sees a temp folder and the run folder holds no dead copies.
    """
    from trainer.fsutil import recover_folders, remove_leftovers

    ckpt_dir = run_dir / CHECKPOINTS
    after = sorted(p for pattern in AFTER_TEMPS for p in run_dir.glob(pattern) if p.is_dir())
    return (remove_leftovers(ckpt_dir / STAGING, run_dir / FINAL_TMP, *after)
            + recover_folders(ckpt_dir) + recover_folders(run_dir))


def disk_full_advice(run_dir: Path) -> str:
    """What a person reads when the disk filled up during a run: which disk, and what is kept."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = run_dir / CHECKPOINTS
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    kept = f"the last checkpoint {Path(last).name} is intact" if last else "no checkpoint was saved yet"
    return disk_full_message(run_dir, "the run's files", kept=kept, then="resume the run (--resume)")


# --------------------------------------------------------------------------- data


def _default_prepare(config: TrainConfig, tokenizer: Any) -> Any:
    from trainer.data import build_datasets

    return build_datasets(config, tokenizer)


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _is_data_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "DataError"


def bad_input_kind(exc: BaseException) -> str | None:
    """The error kind of a checked input problem (its message is already one sentence); None otherwise."""
    from medalpaca_desktop.core.model_check import ModelCheckError
    from trainer.gguf_import import GGUFImportError

    if isinstance(exc, ModelCheckError):
        return exc.kind
    if isinstance(exc, GGUFImportError):
        return "unsupported"
    if isinstance(exc, UnsafeCheckpointError):
        return "unsafe_checkpoint"
    if isinstance(exc, BenchTaskError):
        return "bench_task"
    if isinstance(exc, InferenceError) and exc.kind in BAD_INPUT_KINDS:  # the loader's refusals (pickle, remote code)
        return exc.kind
    return None


# --------------------------------------------------------------------------- the job


def _best_summary(config: TrainConfig, state: Any) -> dict[str, Any]:
    """The best checkpoint for the done event and the runs list; empty when best_by is the last step."""
    measure = config.best_measure()
    if measure == "last" or not state.best_model_checkpoint or state.best_metric is None:
        return {}
    return {"best_by": measure, "best_value": float(state.best_metric), "best_step": int(state.best_global_step),
            "best_checkpoint": str(state.best_model_checkpoint)}


def _best_metric(config: TrainConfig) -> str | None:
    """What the Trainer tracks as the best (and early stopping watches): best_by's metric."""
    from trainer.bench_in_loop import METRIC

    measure = config.best_measure()
    if measure == "accuracy":
        return METRIC
    if measure == "val_loss" or config.early_stopping_patience:
        return "eval_loss"
    return None


def _training_args(config: TrainConfig, ckpt_dir: Path, precision: Any, has_val: bool, device: str) -> Any:
    from transformers import TrainingArguments

    _, world_size = world()
    eval_on = has_val
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation(world_size),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu=device == "cpu",
        logging_strategy="steps",
        logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN must reach the bad-loss alert, not be averaged away
        eval_strategy="steps" if eval_on else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        metric_for_best_model=_best_metric(config) if eval_on else None,
        greater_is_better=config.best_measure() == "accuracy",
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False if config.is_adapter_method else None,
    )


def run_job(config: TrainConfig, *, resume: bool = False, writer: EventWriter | None = None,
            stop: threading.Event | None = None, callbacks: Sequence[Any] = (),
            prepare: Callable[[TrainConfig, Any], Any] | None = None, record_in_store: bool = True) -> ExitCode:
    """Run one fine-tune; every outcome ends with a `done` event. Returns an exit code.

    Rank 0 keeps the run's training_runs row (trainer/run_row.py) unless `record_in_store` is off.
    """
    rank, _ = world()
    writer = writer if (writer is not None and rank == 0) else EventWriter(None)
    stop = stop or threading.Event()
    run_dir = Path(config.output_dir).expanduser()
    row = None
    if rank == 0 and record_in_store:
        from trainer.run_row import TrainingRow

        row = TrainingRow(config, run_dir, writer)
        row.open()
    code = ExitCode.FAILED
    try:
        code = _run(config, run_dir, resume, writer, stop, list(callbacks), prepare or _default_prepare)
    except KeyboardInterrupt:  # a second SIGINT/SIGTERM: leave now, the last checkpoint stays
        code = ExitCode.STOPPED
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one error event
        if (kind := bad_input_kind(exc)) is not None:
            writer.emit(Error(message=str(exc), kind=kind))
            code = ExitCode.BAD_INPUT
        elif _is_out_of_memory(exc):
            writer.emit(Error(message=OOM_ADVICE, kind="oom", detail=str(exc)[:2000]))
        elif is_disk_full(exc, run_dir if run_dir.is_dir() else None):
            writer.emit(Error(message=disk_full_advice(run_dir), kind=DISK_FULL_KIND,
                              detail=traceback.format_exc()[-4000:]))
        elif _is_data_error(exc):
            writer.emit(Error(message=str(exc), kind="data"))
        else:
            writer.emit(Error(message=describe_exception(exc), kind="error", detail=traceback.format_exc()[-4000:]))
        writer.emit(Done(ok=False, data={"run_dir": str(run_dir)}))
    finally:
        if row is not None:
            row.finish(code)
        _leave_process_group()
    return code


def _leave_process_group() -> None:
    """End this rank's part in the process group before the interpreter exits.

    Why: a gloo group still alive at exit lets C++ destructors meet running worker
    threads ("terminate called without an active exception", SIGABRT) in some ranks,
    which turns a finished run into a failed launch.
    """
    if world()[1] <= 1:
        return
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort at the very end
        pass


def _run(config: TrainConfig, run_dir: Path, resume: bool, writer: EventWriter, stop: threading.Event,
         extra_callbacks: list[Any], prepare: Callable[[TrainConfig, Any], Any]) -> ExitCode:
    rank, world_size = world()
    ckpt_dir = run_dir / CHECKPOINTS
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.yaml")
        for note in clean_leftovers(run_dir):
            writer.emit(Log(message=f"Cleaned up: {note}"))
    base_dir = resolve_base_model(config, writer.emit)  # checks the base before the libraries load

    from transformers import AutoTokenizer, EarlyStoppingCallback, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from trainer.callbacks import EventCallback, SaveBest
    from trainer.methods import device_type, load_model

    last = get_last_checkpoint(str(ckpt_dir)) if resume and ckpt_dir.is_dir() else None
    if resume and last is None:
        writer.emit(Warning(message=f"--resume: no checkpoint in {ckpt_dir}; starting from the beginning"))
    writer.emit(Progress(stage="data", message="checking and tokenizing the data"))
    tokenizer = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = prepare(config, tokenizer)  # bad data raises here, before the model loads
    bench_questions = None
    if config.bench_task:  # a task not downloaded is said now, not after the model has loaded
        from trainer.bench_in_loop import load_bench_questions

        bench_questions = load_bench_questions(config)
        writer.emit(Log(message=f"Scoring {len(bench_questions[1])} questions of {config.bench_task} at every "
                                f"evaluation (log-likelihood, lm-eval's prompt)"))
    for note in getattr(data, "notes", None) or []:
        writer.emit(Log(message=str(note)))
    if stop.is_set():
        writer.emit(Done(ok=False, stopped=True, data={"run_dir": str(run_dir)}))
        return ExitCode.STOPPED

    set_seed(config.seed)  # LoRA init must not depend on what ran before
    device = device_type()
    writer.emit(Progress(stage="model", message=f"loading {config.base_model} for {config.method}"))
    loaded = load_model(config, base_dir, device)
    model = loaded.model
    stats = getattr(data, "stats", None)
    writer.emit(Started(job="train", info={
        **loaded.info, "base_model": config.base_model, "output_dir": str(run_dir), "processes": world_size,
        "train_examples": len(data.train), "val_examples": len(data.val) if data.val is not None else 0,
        "gradient_accumulation": config.gradient_accumulation(world_size), "resume_from": last,
        "data_stats": (dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) and not isinstance(stats, type)
                       else stats),
    }))

    event_cb = EventCallback(writer, stop, stop_on_bad_loss=config.stop_on_bad_loss)
    has_val = data.val is not None and len(data.val) > 0
    cbs = [*extra_callbacks, event_cb]
    in_loop = None
    if bench_questions is not None:
        from trainer.bench_in_loop import InLoopBenchmark

        in_loop = InLoopBenchmark(config, bench_questions[0], bench_questions[1], tokenizer, writer, rank,
                                  world_size)
        cbs.append(in_loop)
    cbs.append(SaveBest())  # after the callbacks that add metrics
    if has_val and config.early_stopping_patience > 0:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    from trainer.data import make_collator

    # Packed rows carry position_ids and must not get an attention_mask (examples would attend to each other).
    collator = make_collator(data, tokenizer, pad_to_multiple_of=8 if device == "cuda" else None)
    trainer = _make_trainer_class()(
        model=model, args=_training_args(config, ckpt_dir, loaded.precision, has_val, device),
        train_dataset=data.train, eval_dataset=data.val if has_val else None,
        data_collator=collator, processing_class=tokenizer, callbacks=cbs)
    trainer.template_metadata = (getattr(data, "template", None) or config.template,
                                 getattr(data, "eos_token", None) or tokenizer.eos_token or "")
    try:
        result = trainer.train(resume_from_checkpoint=last)  # torch.load(weights_only=True) for its pickles
    except pickle.UnpicklingError:
        if last is None:
            raise
        raise UnsafeCheckpointError(last) from None

    checkpoints = sorted(str(p) for p in ckpt_dir.glob("checkpoint-*")) if ckpt_dir.is_dir() else []
    summary = {"run_dir": str(run_dir), "checkpoints": checkpoints, "steps": trainer.state.global_step,
               "train_loss": event_cb.last_loss, "val_loss": event_cb.last_eval_loss,
               "mean_train_loss": float(result.training_loss), **_best_summary(config, trainer.state)}
    if in_loop is not None:
        runtime = float(result.metrics.get("train_runtime") or 0.0)
        summary["bench"] = {"task": config.bench_task, "last": in_loop.last, "curve": in_loop.history,
                            "seconds": round(in_loop.seconds, 3), "train_runtime_s": runtime,
                            "share_of_training": round(in_loop.seconds / max(1e-9, runtime), 4)}
    if event_cb.stopped:
        writer.emit(Done(ok=False, stopped=True, data=summary))
        return ExitCode.STOPPED
    if event_cb.bad_loss and config.stop_on_bad_loss:
        writer.emit(Error(message=f"Stopped: {event_cb.bad_loss}.", kind="bad_loss"))
        writer.emit(Done(ok=False, data=summary))
        return ExitCode.FAILED
    best = summary.get("best_checkpoint")
    if best and summary.get("best_step") != trainer.state.global_step:
        # final/ (what chat, merge and export use) holds the best weights. The Trainer's own way,
        # load_best_model_at_end, would demand save_steps be a multiple of eval_steps; SaveBest already
        # saved the best, so its loader (adapters, sharded and FSDP weights alike) is called directly.
        writer.emit(Log(message=f"final/ gets the best weights: {Path(best).name} ({summary['best_by']} "
                                f"{summary['best_value']:.4g})"))
        trainer._load_best_model()
    model_to_save, full_state = trainer.model, None
    if getattr(trainer, "is_fsdp_enabled", False):
        # Under FSDP gathering the full weights is a collective: every rank takes part, rank 0 writes.
        full_state = trainer.accelerator.get_state_dict(trainer.model)
        model_to_save = trainer.accelerator.unwrap_model(trainer.model)
    if rank == 0:
        writer.emit(Progress(stage="save", message="saving the final model"))
        final = save_final(model_to_save, tokenizer, run_dir, config.is_adapter_method, full_state)
        summary["final"] = str(final)
        summary["adapter" if config.is_adapter_method else "model"] = str(final)
        # --- after-training steps (trainer/after.py): card + template files into final/, merge, GGUF;
        # their failures are error events (kind "export"), final/ is kept and done stays ok
        from trainer.after import run_after_training

        summary.update(run_after_training(
            config, run_dir, final, data, {**summary, "duration_s": result.metrics.get("train_runtime"),
                                           "log_history": trainer.state.log_history},
            writer, base_dir=base_dir))
        # --- end after-training steps
    writer.emit(Done(ok=True, data=summary))
    return ExitCode.OK
