"""The two scoring modes, each a batch of questions at a time.

generate: the prompts are tokenized and answered with one call of the backend's
`generate_batch` (each sampled with seed + the question's position in the
dataset, and an answer does not depend on the others computed with it, so
resuming changes nothing); each item is handed on as its answer is final;
a batching backend gets the questions longest prompt first (`longest_first`);
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
    from medalpaca_desktop.inference.base import Backend, Generation


def base_item(q: Question, prompt: str) -> dict[str, Any]:
    return {"id": q.id, "step": q.step, "question": q.question, "options": dict(q.options), "gold": q.gold,
            "pred": None, "correct": False, "prompt": prompt, "output": ""}


def sampling_for(config: BenchConfig, position: int, stop: list[str]) -> SamplingSettings:
    """The paper repository's preset (or greedy), seeded per question."""
    return SamplingSettings(
        temperature=0.0 if config.greedy else config.temperature, top_p=config.top_p, top_k=config.top_k,
        repeat_penalty=1.0, max_tokens=config.max_new_tokens, seed=(config.seed + position) % (2**31 - 1),
        stop=list(stop))


def longest_first(backend: Backend, questions: list[tuple[int, Question]], config: BenchConfig,
                  prompt_info: Any, mode: str = "generate") -> list[tuple[int, Question]]:
    """The (position, question) pairs by prompt length in tokens, longest first, ties in dataset order.

    A batch is padded to its longest prompt, so batches of neighbours in length waste the least
    (lm-eval's generate_until orders its requests the same way): of the positions that batches of 8
    compute for the 72 sample questions, 14 % are padding in file order, 3 % in this order. The
    answers do not depend on the batch (see generate_items), only the order in which they arrive.
    """
    task = config.task_spec()

    def length(entry: tuple[int, Question]) -> tuple[int, int]:
        prompt = build_prompt(entry[1], mode, config.prompt_style, prompt_info, task)
        return -len(backend.tokenize(prompt.text, add_special=prompt.add_special)), entry[0]

    return sorted(questions, key=length)


def generate_items(backend: Backend, questions: list[tuple[int, Question]], config: BenchConfig, prompt_info: Any,
                   should_stop: Callable[[], bool] = lambda: False,
                   on_item: Callable[[dict[str, Any]], None] | None = None,
                   slots: int | None = None) -> list[dict[str, Any]]:
    """The answers to (position, question) pairs, parsed with both rules, in the order they became final.

    One `generate_batch` call computing at most `slots` questions at once;
    `on_item(item)` gets each item as soon as its answer is final, so a run
    saves it before the slower answers end. A question whose answer a stop cut
    short is left out (resuming asks it again, so no item is half-answered), and
    a prompt that does not fit the context is an item with `error` that is never
    generated. `latency_s` is the time since the previous answer was final, so the
    items' latencies add up to the call's duration. An exception raised by
    `on_item` stops the generation and is raised here as it is.
    """
    task = config.task_spec()
    items: list[dict[str, Any]] = []
    asked: list[tuple[Question, dict[str, Any], list[int], SamplingSettings]] = []
    failure: list[Exception] = []
    last = [time.perf_counter()]

    def final(item: dict[str, Any]) -> None:
        now = time.perf_counter()
        item["latency_s"] = round(now - last[0], 4)
        last[0] = now
        items.append(item)
        if on_item is not None:
            on_item(item)

    for position, q in questions:
        prompt = build_prompt(q, "generate", config.prompt_style, prompt_info, task)
        item = base_item(q, prompt.text)
        sampling = sampling_for(config, position, prompt.stop)
        item.update(pred_paper=None, pred_lenient=None, seed=sampling.seed)
        ids = backend.tokenize(prompt.text, add_special=prompt.add_special)
        if len(ids) >= backend.context_length:
            item["error"] = f"the prompt has {len(ids)} tokens; the model's context holds {backend.context_length}"
            final(item)
        else:
            asked.append((q, item, ids, sampling))

    def answered(index: int, answer: Generation) -> None:
        if failure or answer.stats.stop_reason == "stopped":
            return
        q, item, _, _ = asked[index]
        item.update(output=answer.text, tokens=answer.stats.completion_tokens, stop_reason=answer.stats.stop_reason)
        item["pred_paper"] = parse_answer(answer.text, q.options, "paper")
        item["pred_lenient"] = parse_answer(answer.text, q.options, "lenient")
        item["pred"] = item[f"pred_{config.rule}"]
        item["correct"] = item["pred"] is not None and item["pred"] == q.gold
        try:
            final(item)
        except Exception as exc:  # noqa: BLE001  # raised below, after the backend has ended its rows
            failure.append(exc)

    if asked:
        backend.generate_batch([ids for _, _, ids, _ in asked], [s for _, _, _, s in asked],
                               lambda: bool(failure) or should_stop(), slots=slots, on_answer=answered)
    if failure:
        raise failure[0]
    return items


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

    task = config.task_spec()
    prompts = [build_prompt(q, "loglikelihood", config.prompt_style, prompt_info, task) for q in questions]
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
