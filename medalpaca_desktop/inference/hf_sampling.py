"""Sampling for the transformers backend: each row of a batch with its own seeded generator.

Why not `generate(do_sample=True)` after `torch.manual_seed`: then the draws of
all rows come from one generator, so an answer depends on which other
questions share its batch, and a benchmark resumed in the middle of a batch
would answer differently than an uninterrupted run. Here each row applies the
library's own warpers (repetition penalty, temperature, top-k, top-p, in the
order `generate` applies them) and draws from its own `torch.Generator`; the
chosen token is handed to greedy decoding as the only finite logit. A row with
temperature 0 takes the most likely token. Chat (one row) and benchmark
batches share this path, so a seed means the same answer in both.
"""

from __future__ import annotations

import secrets
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from medalpaca_desktop.core.chat_protocol import SamplingSettings


class RowSampler:
    """One row's warpers and generator (no generator: greedy)."""

    def __init__(self, sampling: SamplingSettings, device: Any) -> None:
        self.penalty = (RepetitionPenaltyLogitsProcessor(float(sampling.repeat_penalty))
                        if sampling.repeat_penalty and sampling.repeat_penalty != 1.0 else None)
        self.warpers: list[Any] = []
        self.generator: torch.Generator | None = None
        if sampling.temperature <= 0:
            return
        self.warpers.append(TemperatureLogitsWarper(float(sampling.temperature)))
        if sampling.top_k > 0:
            self.warpers.append(TopKLogitsWarper(int(sampling.top_k)))
        if sampling.top_p < 1:
            self.warpers.append(TopPLogitsWarper(float(sampling.top_p)))  # 0: the most likely token only
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(sampling.seed if sampling.seed >= 0 else secrets.randbits(31))

    def choose(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The next token for this row (`input_ids`, `scores`: this row alone, batch dimension 1)."""
        if self.penalty is not None:
            scores = self.penalty(input_ids, scores)
        if self.generator is None:
            return scores[0].argmax()
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores[0].float(), dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator)[0]


class SeededSampler(LogitsProcessor):
    """Picks every row's next token with that row's settings; use with `do_sample=False`."""

    def __init__(self, samplings: list[SamplingSettings], device: Any) -> None:
        self._rows = [RowSampler(s, device) for s in samplings]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        chosen = torch.stack([row.choose(input_ids[i:i + 1], scores[i:i + 1]) for i, row in enumerate(self._rows)])
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), chosen.to(scores.device)] = 0.0
        return out
