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


# ------------------------------------------------------------------ many questions at once (benchmarks)

#: Rows of one single-token batch; the logits kept are rows x distinct lengths x vocab, so this stays small.
MAX_ROWS = 32


def _encode_request(tokenizer: Any, context: str, continuations: list[str],
                    max_length: int) -> tuple[list[int], list[list[int]]]:
    """One question's (context ids, continuation ids), truncated on the left as score_continuations does."""
    pairs = [encode_pair(tokenizer, context, c) for c in continuations]
    ctx = pairs[0][0] if pairs else []
    if any(p[0] != ctx for p in pairs):
        raise InferenceError("Continuations encoded with different contexts.", "internal")
    conts = [p[1] for p in pairs]
    longest = max((len(c) for c in conts), default=0)
    if longest > max_length:
        raise InferenceError(f"A continuation of {longest} tokens exceeds the context window ({max_length}).",
                             "bad_request")
    return (ctx[-(max_length - longest + 1):] if longest else ctx), conts


def score_requests(model: Any, tokenizer: Any, requests: list[tuple[str, list[str]]], max_length: int,
                   device: Any, should_stop: Callable[[], bool], max_rows: int = MAX_ROWS) -> list[list[float]]:
    """`score_continuations` for many (context, continuations) requests, each prefix computed once.

    Why: a multiple-choice question's options share one long prompt. When every
    continuation is one token (lm-eval's " A".." D") the distribution at the
    prompt's last position gives all of them, so one forward pass per question
    suffices, and questions of similar length share a batch (right-padded,
    longest first). Longer continuations reuse the prompt's KV cache: the prompt
    runs once, then all continuations run as one batch on copies of its cache.
    The numbers are lm-eval's (same encoding and truncation as `encode_pair`).
    """
    import torch

    encoded = [_encode_request(tokenizer, ctx, conts, max_length) for ctx, conts in requests]
    results: list[list[float]] = [[0.0] * len(conts) for _, conts in encoded]
    single = [i for i, (_, conts) in enumerate(encoded) if conts and all(len(c) == 1 for c in conts)]
    multi = sorted(set(i for i, (_, conts) in enumerate(encoded) if any(conts)) - set(single))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(single, key=lambda i: -len(encoded[i][0]))
    groups: list[list[int]] = []
    for i in order:  # longest first: the first row of a group sets its width
        if groups and len(groups[-1]) < max_rows and \
                len(encoded[groups[-1][0]][0]) * (len(groups[-1]) + 1) <= TOKENS_PER_BATCH:
            groups[-1].append(i)
        else:
            groups.append([i])
    for group in groups:
        if should_stop():
            raise InferenceError("Scoring was stopped.", "stopped")
        rows = [encoded[i][0] for i in group]
        input_ids = torch.full((len(rows), len(rows[0])), pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for r, row in enumerate(rows):
            input_ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[r, :len(row)] = 1
        last = [len(row) - 1 for row in rows]
        keep = sorted(set(last))
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           logits_to_keep=torch.tensor(keep, dtype=torch.long, device=device),
                           use_cache=False).logits  # [rows, len(keep), vocab]
        picked = logits[torch.arange(len(rows)), torch.tensor([keep.index(p) for p in last])]
        logprobs = torch.log_softmax(picked.float(), dim=-1)
        for r, i in enumerate(group):
            targets = torch.tensor([c[0] for c in encoded[i][1]], dtype=torch.long, device=logprobs.device)
            results[i] = [float(v) for v in logprobs[r].gather(0, targets)]
    for i in multi:
        if should_stop():
            raise InferenceError("Scoring was stopped.", "stopped")
        results[i] = _score_on_shared_prefix(model, encoded[i][0], encoded[i][1], pad_id, device)
    return results


def _score_on_shared_prefix(model: Any, ctx: list[int], conts: list[list[int]], pad_id: int,
                            device: Any) -> list[float]:
    """The prompt once (its KV cache kept), then every continuation in one batch on copies of that cache."""
    import torch

    results = [0.0] * len(conts)
    live = [j for j, c in enumerate(conts) if c]
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ctx], dtype=torch.long, device=device), use_cache=True,
                    logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        for j in live:
            results[j] = float(first[conts[j][0]])
        width = max(len(conts[j]) for j in live) - 1 if live else 0
        if width <= 0:
            return results
        cache = out.past_key_values
        if not hasattr(cache, "batch_repeat_interleave"):  # a cache type that cannot be copied per row
            for j in live:
                if len(conts[j]) > 1:
                    row = torch.tensor([ctx + conts[j][:-1]], dtype=torch.long, device=device)
                    tail = torch.log_softmax(model(input_ids=row, logits_to_keep=len(conts[j]) - 1,
                                                   use_cache=False).logits[0].float(), dim=-1)
                    target = torch.tensor(conts[j][1:], dtype=torch.long, device=tail.device)
                    results[j] += float(tail.gather(-1, target[:, None]).sum())
            return results
        cache.batch_repeat_interleave(len(live))
        input_ids = torch.full((len(live), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(live), len(ctx) + width), dtype=torch.long)
        mask[:, :len(ctx)] = 1
        for r, j in enumerate(live):
            feed = conts[j][:-1]  # token k of the continuation predicts token k + 1
            input_ids[r, :len(feed)] = torch.tensor(feed, dtype=torch.long)
            mask[r, len(ctx):len(ctx) + len(feed)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), past_key_values=cache,
                       use_cache=True).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for r, j in enumerate(live):
            rest = conts[j][1:]
            if rest:
                target = torch.tensor(rest, dtype=torch.long, device=logprobs.device)
                results[j] += float(logprobs[r, :len(rest)].gather(-1, target[:, None]).sum())
    return results
