"""The conversation's KV cache, reused across turns by prefix matching.

Why: a follow-up turn's prompt is the previous prompt + the answer + the new
message. Keeping the last sequence's ids with its DynamicCache and cropping it
to the longest common prefix means only the new tokens are evaluated, so the
time to first token of turn N does not grow with the history before it.
"""

from __future__ import annotations

import inspect
from typing import Any

_CACHE_KEYWORDS: dict[type, str] = {}


def _cache_keyword(model_class: type) -> str:
    if model_class not in _CACHE_KEYWORDS:
        params = inspect.signature(model_class.forward).parameters  # type: ignore[attr-defined]
        _CACHE_KEYWORDS[model_class] = "cache" if "cache" in params else "past_key_values"
    return _CACHE_KEYWORDS[model_class]


def cache_argument(model: Any, cache: Any) -> dict[str, Any]:
    """`{name: cache}` for a forward call: transformers renamed `past_key_values` to `cache` (5.2x,
    the old name warns until 5.40), and the project accepts both sides of the rename."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper passes it on
    return {_cache_keyword(type(base)): cache}


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PromptCache:
    """One DynamicCache plus the token ids whose keys/values it holds (always the same length)."""

    def __init__(self, model_config: Any) -> None:
        self._config = model_config
        self.cache: Any = None
        self.ids: list[int] = []

    def reset(self) -> None:
        self.cache, self.ids = None, []

    def prepare(self, prompt_ids: list[int]) -> int:
        """Crop the cache to what `prompt_ids` shares with it; returns the tokens reused.

        At least the last prompt token is always left to evaluate: its logits give
        the first answer token.
        """
        from transformers import DynamicCache

        keep = min(common_prefix_length(self.ids, prompt_ids), len(prompt_ids) - 1)
        if self.cache is None or keep <= 0:
            self.cache, self.ids = DynamicCache(config=self._config), []
            return 0
        drop = self.cache.get_seq_length() - keep
        if drop > 0:
            try:
                self.cache.crop(-drop)
            except (RuntimeError, ValueError):  # e.g. a sliding-window layer that cannot roll back
                self.cache, self.ids = DynamicCache(config=self._config), []
                return 0
        self.ids = self.ids[:keep]
        return keep

    def record(self, sequence: list[int]) -> None:
        """After a forward pass or generate(): the cache holds the first get_seq_length() ids of `sequence`."""
        length = self.cache.get_seq_length() if self.cache is not None else 0
        self.ids = list(sequence[:length])
