"""Several answers in one `generate()` call, and what a row of a batch holds (RowState, feed_row).

Benchmarks in generate mode use it for models whose cache continuous batching
(hf_refill) cannot join, such as sliding-window caches; hf_refill shares the rows.
The prompts are left-padded into one batch; every row keeps its own sampling
settings and seed (hf_sampling), its own length limit and stop strings, and
ends on its own: `RowSink` marks a row finished at its end-of-sequence token,
stop string or length, and the library then pads it while the others go on.
A stop request ends every row still running; those answers come back with
stop_reason "stopped" so the caller can ask them again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from medalpaca_desktop.core.chat_protocol import SamplingSettings, StopReason
from medalpaca_desktop.inference.base import Generation, GenerationStats, StopCheck
from medalpaca_desktop.inference.hf_sampling import SeededSampler
from medalpaca_desktop.inference.hf_stream import IncrementalDecoder, StopStringFilter


@dataclass
class RowState:
    """What one row has produced so far."""

    decoder: IncrementalDecoder
    filter: StopStringFilter
    max_new: int
    limit_reason: StopReason  # "length", or "context_full" when the context, not max_tokens, is the limit
    tokens: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    reason: StopReason | None = None  # set once the row is finished
    first_token_at: float | None = None
    last_token_at: float | None = None


def new_row(tokenizer: Any, sampling: SamplingSettings, room: int) -> RowState:
    """A row for a prompt that leaves `room` tokens of context (> 0): its limit is the smaller of the two."""
    max_new = min(sampling.max_tokens, room)
    return RowState(IncrementalDecoder(tokenizer), StopStringFilter(list(sampling.stop)), max_new,
                    "length" if max_new == sampling.max_tokens else "context_full")


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of the prompts right-aligned in one batch, padded on the left."""
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, ids in enumerate(prompts):
        input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[r, width - len(ids):] = 1
    return input_ids, mask


def row_answer(row: RowState, prompt_tokens: int, asked_at: float) -> Generation:
    """A finished row (after finish_row) as the answer `generate_batch` returns; ttft counts from `asked_at`."""
    n = len(row.tokens)
    first, last = row.first_token_at, row.last_token_at
    rate = (n - 1) / (last - first) if first and last and last > first and n > 1 else None
    reason: StopReason = row.reason or row.limit_reason
    return Generation("".join(row.text), GenerationStats(
        prompt_tokens=prompt_tokens, completion_tokens=n, ttft_s=(first - asked_at) if first else None,
        tokens_per_s=rate, stop_reason=reason))


class RowSink(StoppingCriteria):
    """Collects each row's text and tells `generate` which rows are finished."""

    def __init__(self, rows: list[RowState], eos_ids: set[int], should_stop: StopCheck) -> None:
        self.rows = rows
        self._eos_ids = eos_ids
        self._should_stop = should_stop

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        now = time.perf_counter()
        newest = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, newest):
            if row.reason is None:
                feed_row(row, int(token), now, self._eos_ids)
        if self._should_stop():
            for row in self.rows:
                if row.reason is None:
                    row.reason = "stopped"
        done = [row.reason is not None for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def finish(self) -> None:
        """Flush what each row still holds back; a row the library ended itself ran to its length."""
        for row in self.rows:
            finish_row(row)


def feed_row(row: RowState, token: int, now: float, eos_ids: set[int]) -> None:
    """One new token of a row: its text, and whether it ends the row (EOS, a stop string, the length)."""
    row.tokens.append(token)
    if row.first_token_at is None:
        row.first_token_at = now
    row.last_token_at = now
    if token in eos_ids:
        row.reason = "eos"
        return
    row.text.append(row.filter.feed(row.decoder.push(token)))
    if row.filter.hit:
        row.reason = "stop_string"
    elif len(row.tokens) >= row.max_new:
        row.reason = row.limit_reason


def finish_row(row: RowState) -> None:
    """Flush the text a row still holds back (a partial character, a possible stop string's start)."""
    row.text.append(row.filter.feed(row.decoder.flush()))
    row.text.append(row.filter.flush())
    if row.reason is None:
        row.reason = row.limit_reason


def generate_rows(model: Any, tokenizer: Any, prompts: list[list[int]], samplings: list[SamplingSettings],
                  context_length: int, device: str, eos_ids: set[int], generation_config: Any,
                  should_stop: StopCheck) -> list[Generation]:
    """Answers to `prompts`, one `generate()` call; prompts that leave no room get "context_full" at once."""
    started = time.perf_counter()
    answers: dict[int, Generation] = {}
    rows: list[RowState] = []
    live: list[int] = []
    for i, (ids, sampling) in enumerate(zip(prompts, samplings, strict=True)):
        room = context_length - len(ids)
        if room <= 0:
            answers[i] = Generation("", GenerationStats(len(ids), 0, None, None, "context_full"))
            continue
        rows.append(new_row(tokenizer, sampling, room))
        live.append(i)
    if not live:
        return [answers[i] for i in range(len(prompts))]
    input_ids, attention = left_padded([prompts[i] for i in live], generation_config.pad_token_id)
    config = generation_config
    config.max_new_tokens = max(row.max_new for row in rows)
    sink = RowSink(rows, eos_ids, should_stop)
    with torch.inference_mode():
        model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                       generation_config=config,
                       logits_processor=LogitsProcessorList([SeededSampler([samplings[i] for i in live], device)]),
                       stopping_criteria=StoppingCriteriaList([sink]))
    sink.finish()
    for row, i in zip(rows, live):
        answers[i] = row_answer(row, len(prompts[i]), started)
    return [answers[i] for i in range(len(prompts))]
