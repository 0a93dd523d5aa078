"""Continuous batching for benchmarks in generate mode: a finished row's slot takes the next prompt.

Why: `generate()` runs a batch until its longest answer ends, and a row that
has finished is computed until then. With the paper's long answers 57 % of the
row-steps of batches of 8 were spent on finished rows. Here a batch holds at
most `slots` rows; when rows end, the next prompts are evaluated (one
left-padded forward pass for all that enter together) and their KV cache joins
the batch's, aligned on the right edge, so every step computes only rows that
are still answering. Decoding is memory-bound (the weights are read once per
step whatever the batch), so fewer steps is what saves time.

Why not transformers' own `generate_batch` (continuous batching over a paged
cache): on this project's CPU measurement (demo model, 24 long answers, 8 slots)
it took 86 s against 64 s for plain batches of 8; its paged attention steps and
scheduling thread cost more than they save there. This loop uses the plain
`DynamicCache` and `model()` the rest of the backend uses.

Each row keeps what `generate_rows` gives it: its own seeded sampler
(hf_sampling), stop strings, length limit and end-of-sequence ids (`hf_batch.feed_row`),
and explicit position ids (counted from its own first token), so its answer does
not depend on which other rows share a step, up to floating-point differences
between batch shapes. Models whose cache is not a plain `DynamicLayer` per layer
(sliding-window or hybrid caches) are answered with `generate_rows` instead:
`supports_refill` says which.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from medalpaca_desktop.core.chat_protocol import SamplingSettings
from medalpaca_desktop.inference.base import AnswerCallback, Generation, GenerationStats, StopCheck
from medalpaca_desktop.inference.hf_batch import RowState, feed_row, finish_row, left_padded, new_row, row_answer
from medalpaca_desktop.inference.hf_cache import cache_argument
from medalpaca_desktop.inference.hf_sampling import RowSampler


def supports_refill(model: Any) -> bool:
    """True when the model's default cache is one plain DynamicLayer per layer (no sliding window)."""
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001  # a config the cache cannot read: let generate() decide
        return False
    layers: list[Any] = list(getattr(cache, "layers", None) or [])
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@dataclass
class _Slot:
    """One row of the running batch."""

    index: int  # the prompt's position in the caller's list
    state: RowState
    sampler: RowSampler
    history: list[int]  # prompt + answer so far (the repetition penalty reads it)
    position: int  # the position id of the newest token in history (the next step's input)
    entered_at: float


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class _Batch:
    """The running rows: their KV cache and attention mask, both left-padded to one width."""

    def __init__(self) -> None:
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # [rows, width], 1 where a cached position is real

    @property
    def width(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    def join(self, cache: Any, mask: torch.Tensor) -> None:
        """Append rows (their cache from a prefill) to the batch, aligned on the right edge."""
        if self.cache is None or self.mask is None:
            self.cache, self.mask = cache, mask
            return
        width = max(self.width, int(mask.shape[1]))
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width, -2), _pad_left(theirs.keys, width, -2)], dim=0)
            mine.values = torch.cat([_pad_left(mine.values, width, -2), _pad_left(theirs.values, width, -2)],
                                    dim=0)
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)], dim=0)

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows`, then drop the leading columns that no kept row uses."""
        assert self.mask is not None
        if not rows:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else 0
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            keep = index.to(layer.keys.device)
            layer.keys = layer.keys.index_select(0, keep)[:, :, start:]
            layer.values = layer.values.index_select(0, keep)[:, :, start:]

    def grow(self) -> torch.Tensor:
        """The mask for a decode step: one more real position per row."""
        assert self.mask is not None
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        return self.mask


class Refiller:
    """One benchmark call: prompts enter as slots free up, answers leave as they end."""

    def __init__(self, model: Any, tokenizer: Any, device: str, eos_ids: set[int], pad_id: int,
                 should_stop: StopCheck, on_answer: AnswerCallback | None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.pad_id = pad_id
        self.eos_ids = eos_ids
        self.should_stop = should_stop
        self.on_answer = on_answer
        self.answers: dict[int, Generation] = {}
        self.batch = _Batch()
        self.slots: list[_Slot] = []

    def run(self, prompts: list[list[int]], samplings: list[SamplingSettings], context_length: int,
            slots: int) -> list[Generation]:
        waiting: list[int] = []
        if len(samplings) != len(prompts):
            raise ValueError("one sampling setting per prompt")
        for i, ids in enumerate(prompts):
            if context_length - len(ids) <= 0:
                self._answer(i, Generation("", GenerationStats(len(ids), 0, None, None, "context_full")))
            else:
                waiting.append(i)
        waiting.reverse()  # pop() takes them in the caller's order
        while waiting or self.slots:
            if self.should_stop():
                break
            free = slots - len(self.slots)
            if free > 0 and waiting:
                self._enter([waiting.pop() for _ in range(min(free, len(waiting)))], prompts, samplings,
                            context_length)
            else:
                self._step()
            self._leave()
        for slot in self.slots:
            slot.state.reason = "stopped"
        self._leave()
        for i in waiting:
            self._answer(i, Generation("", GenerationStats(len(prompts[i]), 0, None, None, "stopped")))
        return [self.answers[i] for i in range(len(prompts))]

    # ------------------------------------------------------------------ the two kinds of forward pass

    def _enter(self, indices: list[int], prompts: list[list[int]], samplings: list[SamplingSettings],
               context_length: int) -> None:
        """Evaluate the entering prompts together and take each one's first token."""
        now = time.perf_counter()
        input_ids, mask = left_padded([prompts[i] for i in indices], self.pad_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), **cache_argument(self.model, cache),
                         use_cache=True, logits_to_keep=1)
        self.batch.join(cache, mask.to(self.device))
        for i in indices:
            state = new_row(self.tokenizer, samplings[i], context_length - len(prompts[i]))
            self.slots.append(_Slot(i, state, RowSampler(samplings[i], self.device), list(prompts[i]),
                                    len(prompts[i]) - 1, now))
        self._take(out.logits[:, -1, :], self.slots[-len(indices):])

    def _step(self) -> None:
        """One decode step for every running row."""
        last = torch.tensor([[slot.history[-1]] for slot in self.slots], dtype=torch.long, device=self.device)
        positions = torch.tensor([[slot.position] for slot in self.slots], dtype=torch.long, device=self.device)
        mask = self.batch.grow()
        out = self.model(input_ids=last, attention_mask=mask, position_ids=positions,
                         **cache_argument(self.model, self.batch.cache), use_cache=True)
        self._take(out.logits[:, -1, :], self.slots)

    def _take(self, logits: torch.Tensor, slots: list[_Slot]) -> None:
        """Choose each row's next token (its own sampler, as generate() with SeededSampler) and feed it."""
        scores = logits.float()
        plain = all(slot.sampler.generator is None and slot.sampler.penalty is None for slot in slots)
        if plain:
            chosen = scores.argmax(dim=-1).tolist()
        else:
            chosen = []
            for r, slot in enumerate(slots):
                history = torch.tensor([slot.history], dtype=torch.long, device=scores.device)
                chosen.append(int(slot.sampler.choose(history, scores[r:r + 1])))
        now = time.perf_counter()
        for slot, token in zip(slots, chosen, strict=True):
            slot.history.append(int(token))
            slot.position += 1
            feed_row(slot.state, int(token), now, self.eos_ids)

    # ------------------------------------------------------------------ answers

    def _leave(self) -> None:
        """Hand over the rows that ended and drop them from the batch."""
        ended = [r for r, slot in enumerate(self.slots) if slot.state.reason is not None]
        if not ended:
            return
        for r in ended:
            slot = self.slots[r]
            self._answer(slot.index, self._generation(slot))
        keep = [r for r, slot in enumerate(self.slots) if slot.state.reason is None]
        self.slots = [self.slots[r] for r in keep]
        self.batch.keep(keep)

    def _generation(self, slot: _Slot) -> Generation:
        finish_row(slot.state)
        return row_answer(slot.state, len(slot.history) - len(slot.state.tokens), slot.entered_at)

    def _answer(self, index: int, generation: Generation) -> None:
        self.answers[index] = generation
        if self.on_answer is not None:
            self.on_answer(index, generation)


def generate_refilled(model: Any, tokenizer: Any, prompts: list[list[int]], samplings: list[SamplingSettings],
                      context_length: int, device: str, eos_ids: set[int], pad_id: int, slots: int,
                      should_stop: StopCheck, on_answer: AnswerCallback | None = None) -> list[Generation]:
    """Answers to `prompts` with at most `slots` rows computed at once; `on_answer(i, answer)` as each ends.

    A stop ends the running rows and leaves the waiting ones unasked; both come
    back with stop_reason "stopped". A prompt that leaves no room gets "context_full".
    """
    with torch.inference_mode():
        return Refiller(model, tokenizer, device, eos_ids, pad_id, should_stop, on_answer).run(
            prompts, samplings, context_length, max(1, slots))
