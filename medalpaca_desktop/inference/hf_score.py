"""Log-likelihood of continuations after a context, the way lm-eval's HF model computes it.

Why lm-eval's way: the benchmark compares answer options by these sums, so the
numbers must match what published evaluations do. The context and
context+continuation are encoded separately and the continuation's tokens are
those of the whole encoding after the context's, so a word that merges across
the boundary is still scored as the model would write it; trailing spaces of
the context move to the continuation; the tokenizer's own leading specials (BOS)
come first in both, and an empty context is conditioned on BOS (or EOS).
"""

from __future__ import annotations

from typing import Any, Callable

from medalpaca_desktop.inference.base import InferenceError

TOKENS_PER_BATCH = 4096  # padded tokens per forward pass: bounded memory, still batched


def leading_special_ids(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before any text with add_special_tokens=True (e.g. [BOS] or [])."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            return list(with_special[:start])
    return []


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's `_encode_pair` forms them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    lead = leading_special_ids(tokenizer)
    whole = lead + tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = lead + (tokenizer(context, add_special_tokens=False)["input_ids"] if context else [])
    cont = whole[len(ctx):]
    if not ctx:  # nothing to condition the first token on: lm-eval's prefix token
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise InferenceError("An empty context needs a BOS or EOS token, and this tokenizer has neither.",
                                 "bad_request")
        ctx = [int(prefix)]
    return ctx, cont


def _batches(order: list[int], lengths: list[int], context_len: int) -> list[list[int]]:
    """Groups of continuation indexes (longest first) whose padded size stays within the budget."""
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = context_len + max([lengths[j] for j in current] + [lengths[i]])
        if current and width * (len(current) + 1) > TOKENS_PER_BATCH:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def score_continuations(model: Any, tokenizer: Any, context: str, continuations: list[str], max_length: int,
                        device: Any, should_stop: Callable[[], bool]) -> list[float]:
    """Sum of log-softmax over each continuation's tokens given the context."""
    import torch

    pairs = [encode_pair(tokenizer, context, c) for c in continuations]
    ctx = pairs[0][0] if pairs else []
    if any(p[0] != ctx for p in pairs):  # trailing-space moves differ only per context, so this cannot happen
        raise InferenceError("Continuations encoded with different contexts.", "internal")
    conts = [p[1] for p in pairs]
    lengths = [len(c) for c in conts]
    longest = max(lengths, default=0)
    if longest > max_length:
        raise InferenceError(f"A continuation of {longest} tokens exceeds the context window ({max_length}).",
                             "bad_request")
    ctx = ctx[-(max_length - longest + 1):] if longest else ctx  # lm-eval truncates the context on the left
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results = [0.0] * len(conts)
    order = sorted((i for i in range(len(conts)) if lengths[i]), key=lambda i: -lengths[i])
    for group in _batches(order, lengths, len(ctx)):
        if should_stop():
            raise InferenceError("Scoring was stopped.", "stopped")
        width = max(lengths[i] for i in group)
        rows = [(ctx + conts[i])[:-1] for i in group]
        full = len(ctx) + width - 1
        input_ids = torch.full((len(rows), full), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), full), dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[r, :len(row)] = 1
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           logits_to_keep=width, use_cache=False).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # [rows, width, vocab]; j predicts cont token j
        for r, i in enumerate(group):
            target = torch.tensor(conts[i], dtype=torch.long, device=logprobs.device)
            picked = logprobs[r, :lengths[i]].gather(-1, target[:, None])
            results[i] = float(picked.sum())
    return results
