"""The two scoring modes, one question (generate) or a batch of questions (loglikelihood) at a time.

generate: the prompt is tokenized and answered with the backend's own sampler
(seed + the question's position in the dataset, so resuming changes nothing);
the raw answer is parsed with both rules (bench.answers) and `pred` follows the
config's rule. A prompt that does not fit the context is an item with `error`
(counted wrong and unparseable), not a failed run.

loglikelihood: each option's continuation is scored after the prompt with the
backend's `loglikelihood` (prefix computed once per question, lm-eval's
loglikelihood semantics); `pred` is the argmax of the sums (acc), `pred_norm`
the argmax of the sums divided by the choice's length in characters (acc_norm).
Ties go to the first option, as numpy's argmax in lm-eval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.answers import parse_answer
from bench.config import BenchConfig
from bench.prompts import build_prompt
from bench.questions import Question
from medalpaca_desktop.core.chat_protocol import SamplingSettings

if TYPE_CHECKING:  # the GUI reads bench modules and must not import the inference package
    from medalpaca_desktop.inference.base import Backend


def base_item(q: Question, prompt: str) -> dict[str, Any]:
    return {"id": q.id, "step": q.step, "question": q.question, "options": dict(q.options), "gold": q.gold,
            "pred": None, "correct": False, "prompt": prompt, "output": ""}


def sampling_for(config: BenchConfig, position: int, stop: list[str]) -> SamplingSettings:
    """The paper repository's preset (or greedy), seeded per question."""
    return SamplingSettings(
        temperature=0.0 if config.greedy else config.temperature, top_p=config.top_p, top_k=config.top_k,
        repeat_penalty=1.0, max_tokens=config.max_new_tokens, seed=(config.seed + position) % (2**31 - 1),
        stop=list(stop))


def generate_item(backend: Backend, q: Question, position: int, config: BenchConfig, prompt_info: Any,
                  should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any] | None:
    """One question's answer, parsed with both rules; None when a stop cut the answer short.

    A cut answer is not recorded: resuming asks the question again, so no item is half-answered.
    """
    prompt = build_prompt(q, "generate", config.prompt_style, prompt_info)
    item = base_item(q, prompt.text)
    sampling = sampling_for(config, position, prompt.stop)
    item.update(pred_paper=None, pred_lenient=None, seed=sampling.seed)
    started = time.perf_counter()
    ids = backend.tokenize(prompt.text, add_special=prompt.add_special)
    if len(ids) >= backend.context_length:
        item["error"] = (f"the prompt has {len(ids)} tokens; the model's context holds {backend.context_length}")
        item["latency_s"] = time.perf_counter() - started
        return item
    pieces: list[str] = []
    stats = backend.generate(ids, sampling, pieces.append, should_stop)
    if stats.stop_reason == "stopped":
        return None
    output = "".join(pieces)
    item["latency_s"] = round(time.perf_counter() - started, 4)
    item.update(output=output, tokens=stats.completion_tokens, stop_reason=stats.stop_reason)
    item["pred_paper"] = parse_answer(output, q.options, "paper")
    item["pred_lenient"] = parse_answer(output, q.options, "lenient")
    item["pred"] = item[f"pred_{config.rule}"]
    item["correct"] = item["pred"] is not None and item["pred"] == q.gold
    return item


def _argmax(values: dict[str, float]) -> str | None:
    best: str | None = None
    for letter, value in values.items():
        if best is None or value > values[best]:
            best = letter
    return best


def loglikelihood_items(backend: Backend, questions: list[Question], config: BenchConfig,
                        prompt_info: Any, should_stop: Callable[[], bool] = lambda: False) -> list[dict[str, Any]]:
    """Score a batch of questions in one `loglikelihood` call.

    A stop during the batch (the backend raises InferenceError kind "stopped") returns no items:
    the batch is scored again on resume.
    """
    from medalpaca_desktop.inference.base import InferenceError

    prompts = [build_prompt(q, "loglikelihood", config.prompt_style, prompt_info) for q in questions]
    requests = [(p.text, list(p.continuations.values())) for p in prompts]
    started = time.perf_counter()
    try:
        sums = backend.loglikelihood(requests, should_stop, max_rows=config.batch_size)
    except InferenceError as exc:
        if exc.kind == "stopped":
            return []
        raise
    latency = round((time.perf_counter() - started) / max(1, len(questions)), 4)
    items = []
    for q, prompt, values in zip(questions, prompts, sums):
        item = base_item(q, prompt.text)
        scores = dict(zip(prompt.continuations, (float(v) for v in values)))
        norm = {k: v / max(1, len(prompt.choices[k])) for k, v in scores.items()}
        item["pred"] = _argmax(scores)
        item["correct"] = item["pred"] == q.gold
        item.update(scores=scores, scores_norm=norm, pred_norm=_argmax(norm),
                    correct_norm=_argmax(norm) == q.gold, latency_s=latency)
        items.append(item)
    return items
