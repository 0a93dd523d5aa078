"""Is the export as good as the original? The same N questions on both, paired.

Why: a merge or a GGUF quantization can cost accuracy that nothing else shows
(Unsloth users find fine-tunes "much worse after GGUF export", #976). Both models
score the same questions (N of a suite task or a questions file, drawn with a seed), in
log-likelihood mode with lm-eval's prompt, as two ordinary benchmark runs (so they
are resumable and appear in the Benchmark tab's History), and `bench.stats`
compares them: both accuracies, the paired difference with its bootstrap interval,
and McNemar's p. The candidate is "significantly worse" when it is below the
reference and p < 0.05.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

from bench.config import BenchConfig, ConfigError
from medalpaca_desktop.core.events import Error, Event, EventWriter, Log, Progress, Warning

DEFAULT_QUESTIONS = 200
SIGNIFICANT_P = 0.05


def check_config(task_or_file: str, **values: Any) -> BenchConfig:
    """A log-likelihood run with lm-eval's prompt over a suite task or a questions file (any other field: values)."""
    from bench.tasks import task_keys

    task = task_or_file if task_or_file in task_keys() else ""
    return BenchConfig(task=task, data="" if task else task_or_file, mode="loglikelihood", prompt_style="lm-eval",
                       **values)


def parse_verify(text: str) -> tuple[str, int]:
    """"TASK[:N]" -> (task or questions file, N); N defaults to 200."""
    task, sep, count = text.rpartition(":")
    if not sep or not count.isdigit():
        return text, DEFAULT_QUESTIONS
    if int(count) < 1:
        raise ConfigError(f"verify: {text!r}: give at least one question (TASK:N)")
    return task, int(count)


class _Forward(EventWriter):
    """A run's progress, logs and warnings go on to the caller's stream under `stage`; its own started,
    result and done events stay in its run folder (events.jsonl)."""

    def __init__(self, target: EventWriter | None, stage: str) -> None:
        super().__init__(None)
        self.target = target
        self.stage = stage
        self.error: str | None = None  # the run's own error message, for the caller's

    def emit(self, event: Event) -> None:
        if isinstance(event, Error):
            self.error = event.message
        if self.target is None:
            return
        if isinstance(event, Progress) and event.stage == "eval":
            self.target.emit(Progress(stage=self.stage, current=event.current, total=event.total, unit=event.unit,
                                      rate=event.rate, eta_s=event.eta_s, message=event.message))
        elif isinstance(event, (Log, Warning)):
            self.target.emit(event)


def verdict(comparison: dict[str, Any], reference: str, candidate: str) -> tuple[bool, str]:
    """(significantly worse?, one paragraph for a person)."""
    diff = comparison["acc_b"] - comparison["acc_a"]
    low, high = comparison["diff_ci"]
    worse = diff < 0 and comparison["p_value"] < SIGNIFICANT_P
    text = (f"On {comparison['n_shared']} questions: {reference} {100 * comparison['acc_a']:.1f} %, "
            f"{candidate} {100 * comparison['acc_b']:.1f} % (difference {100 * diff + 0.0:+.1f} points, 95 % "
            f"interval {-100 * high + 0.0:+.1f} to {-100 * low + 0.0:+.1f}; McNemar p = "
            f"{comparison['p_value']:.3g}). ")
    if worse:
        text += f"{candidate} is significantly worse: use a larger type (q8_0, f16) or check the export."
    elif diff > 0 and comparison["p_value"] < SIGNIFICANT_P:
        text += f"{candidate} is significantly better."
    else:
        text += "No significant difference."
    return worse, text


def verify(reference: str, candidate: str, task_or_file: str, n: int, out: str | Path, *,
           reference_adapter: str | None = None, writer: EventWriter | None = None,
           stop: threading.Event | None = None, resume: bool = True, seed: int = 42,
           labels: tuple[str, str] = ("the original", "the export")) -> dict[str, Any]:
    """Score `n` questions drawn with `seed` (as the in-loop benchmark draws them) on both models (runs in
    out/reference and out/candidate) and compare.

    The verdict goes to `writer` (a Warning when the candidate is significantly worse, else a Log); `labels`
    name the two models in it (the Benchmark tab's check of any two models passes their names).
    Raises bench.run.BadInput for questions or a model that cannot be used, RuntimeError when a run
    did not finish (stopped or failed; its events.jsonl says why).
    """
    from bench.results import compare_runs
    from bench.run import load_questions, run_job

    out = Path(out).expanduser()
    stop = stop or threading.Event()
    runs = (("reference", reference, reference_adapter or ""), ("candidate", candidate, ""))
    configs = [(name, model, check_config(task_or_file, model=model, adapter=adapter, sample=n, seed=seed,
                                          out=str(out / name), label=f"{Path(model).name} ({name})"))
               for name, model, adapter in runs]
    load_questions(configs[0][2])  # questions that cannot be read are said before any model loads
    for name, model, config in configs:
        config.validate(check_paths=False)
        if writer is not None:
            writer.emit(Log(message=f"Verifying: scoring {n} questions on the {name} ({model})"))
        folder = out / name
        if not resume and folder.is_dir():  # a new export: the old scores are not this file's
            shutil.rmtree(folder)
        resumable = resume and (folder / "config.yaml").is_file()
        forward = _Forward(writer, f"Checking: scoring {labels[0] if name == 'reference' else labels[1]}")
        code = run_job(config, resume=resumable, writer=forward, stop=stop)
        if code != 0:
            why = forward.error or f"exit {code}; see {folder / 'events.jsonl'}"
            raise RuntimeError(f"the {name} ({model}) was not scored: {why}")
    comparison = compare_runs(out / "reference", out / "candidate")
    worse, text = verdict(comparison, *labels)
    if writer is not None:  # a warning the GUI and the runs' logs show when the candidate is worse
        writer.emit(Warning(message=f"{Path(candidate).name}: {text}", extra={"kind": "export_worse"}) if worse
                    else Log(message=f"{Path(candidate).name}: {text}"))
    return {**comparison, "significantly_worse": worse, "verdict": text, "out": str(out)}
