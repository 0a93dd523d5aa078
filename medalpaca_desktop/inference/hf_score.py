"""Log-likelihood of encoded continuations after a context, the way lm-eval's HF model computes it.

Why lm-eval's way: the benchmark compares answer options by these sums, so the
numbers must match what published evaluations do. The encoding (lm-eval's
`_encode_pair`) is the backend base's (base.Backend.encode_pair); here the
encoded requests are truncated on the left as lm-eval does and run through the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medalpaca_desktop.inference.base import EncodedRequest, InferenceError, ScoreDetail
from medalpaca_desktop.inference.hf_cache import cache_argument

TOKENS_PER_BATCH = 4096  # padded tokens per forward pass on a CPU: bounded memory, still batched
MAX_TOKENS_PER_BATCH = 1 << 20
GPU_MEMORY_SHARE = 0.4  # of the free GPU memory, for one forward pass's activations


def token_budget(model: Any, device: Any) -> int:
    """Padded tokens one forward pass may hold: 4,096 on a CPU (compute-bound: wider batches gain
    nothing), on a GPU what fits in a share of the free memory. Why: at 4,096 tokens a GPU runs
    half-empty batches of 16 MedQA questions; the activations of one layer at a time (inference
    mode keeps no graph) cost about (4 x hidden + 2 x intermediate) values per token."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type != "cuda" or not torch.cuda.is_available():
        return TOKENS_PER_BATCH
    free, _total = torch.cuda.mem_get_info(dev)
    config = getattr(model, "config", None)
    hidden = int(getattr(config, "hidden_size", 4096) or 4096)
    inter = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    return budget_for_memory(free, hidden, inter, torch.finfo(getattr(model, "dtype", torch.float16)).bits // 8)


def budget_for_memory(free_bytes: int, hidden: int, intermediate: int, item_bytes: int) -> int:
    """Tokens whose one-layer activations fit in GPU_MEMORY_SHARE of `free_bytes` (4,096 at least)."""
    per_token = (4 * hidden + 2 * intermediate) * item_bytes * 2  # x2: temporaries beside inputs and outputs
    return max(TOKENS_PER_BATCH, min(MAX_TOKENS_PER_BATCH, int(free_bytes * GPU_MEMORY_SHARE / per_token)))


def leading_special_ids(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before any text with add_special_tokens=True (e.g. [BOS] or [])."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            return list(with_special[:start])
    return []


def _truncate(request: EncodedRequest, max_length: int) -> EncodedRequest:
    """The context cut on the left so the longest continuation fits, as lm-eval does."""
    ctx, conts = request
    longest = max((len(c) for c in conts), default=0)
    if longest > max_length:
        raise InferenceError(f"A continuation of {longest} tokens exceeds the context window ({max_length}).",
                             "bad_request")
    return (ctx[-(max_length - longest + 1):] if longest else ctx), conts


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


def score_continuations(model: Any, tokenizer: Any, request: EncodedRequest, max_length: int,
                        device: Any, should_stop: Callable[[], bool]) -> list[ScoreDetail]:
    """Sum of log-softmax over each continuation's tokens given the context, whether each token was the
    argmax, and the token count (one forward pass per group of continuations)."""
    import torch

    ctx, conts = _truncate(request, max_length)
    lengths = [len(c) for c in conts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results = [ScoreDetail(0.0, True, 0)] * len(conts)
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
            rows_i = logprobs[r, :lengths[i]]
            picked = rows_i.gather(-1, target[:, None])
            results[i] = ScoreDetail(float(picked.sum()), bool((rows_i.argmax(-1) == target).all()), lengths[i])
    return results


# ------------------------------------------------------------------ many questions at once (benchmarks)

#: Rows of one single-token batch; the logits kept are rows x distinct lengths x vocab, so this stays small.
MAX_ROWS = 32


def score_requests(model: Any, tokenizer: Any, requests: list[EncodedRequest], max_length: int,
                   device: Any, should_stop: Callable[[], bool], max_rows: int = MAX_ROWS,
                   budget: int | None = None) -> list[list[float]]:
    """`score_continuations`' sums for many encoded requests, each prefix computed once.

    Why: a multiple-choice question's options share one long prompt. When every
    continuation is one token (lm-eval's " A".." D") the distribution at the
    prompt's last position gives all of them, so one forward pass per question
    suffices, and questions of similar length share a batch (right-padded,
    longest first). Longer continuations reuse the prompt's KV cache: the prompt
    runs once, then all continuations run as one batch on copies of its cache.
    The numbers are lm-eval's (same truncation as `score_continuations`).
    `budget`: padded tokens per pass (default `token_budget`); a pass that runs out of
    memory anyway is split in two and retried.
    """
    import torch

    budget = budget or token_budget(model, device)
    encoded = [_truncate(request, max_length) for request in requests]
    results: list[list[float]] = [[0.0] * len(conts) for _, conts in encoded]
    single = [i for i, (_, conts) in enumerate(encoded) if conts and all(len(c) == 1 for c in conts)]
    multi = sorted(set(i for i, (_, conts) in enumerate(encoded) if any(conts)) - set(single))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(single, key=lambda i: -len(encoded[i][0]))
    groups: list[list[int]] = []
    for i in order:  # longest first: the first row of a group sets its width
        if groups and len(groups[-1]) < max_rows and \
                len(encoded[groups[-1][0]][0]) * (len(groups[-1]) + 1) <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    pending = list(reversed(groups))
    while pending:
        group = pending.pop()
        if should_stop():
            raise InferenceError("Scoring was stopped.", "stopped")
        try:
            logprobs = _last_position_logprobs(model, [encoded[i][0] for i in group], pad_id, device)
        except Exception as exc:
            from medalpaca_desktop.inference.hf_load import is_oom

            if len(group) < 2 or not is_oom(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(group) // 2
            pending += [group[half:], group[:half]]  # the first half next
            continue
        for r, i in enumerate(group):
            targets = torch.tensor([c[0] for c in encoded[i][1]], dtype=torch.long, device=logprobs.device)
            results[i] = [float(v) for v in logprobs[r].gather(0, targets)]
    for i in multi:
        if should_stop():
            raise InferenceError("Scoring was stopped.", "stopped")
        results[i] = _score_on_shared_prefix(model, encoded[i][0], encoded[i][1], pad_id, device)
    return results


def _last_position_logprobs(model: Any, rows: list[list[int]], pad_id: int, device: Any) -> Any:
    """log-softmax at each row's last token (rows right-padded to the first, longest, row)."""
    import torch

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
    return torch.log_softmax(picked.float(), dim=-1)


def _score_on_shared_prefix(model: Any, ctx: list[int], conts: list[list[int]], pad_id: int,
                            device: Any) -> list[float]:
    """The prompt once (its KV cache kept), then every continuation in one batch on copies of that cache."""
    import torch

    results = [0.0] * len(conts)
    live = [j for j, c in enumerate(conts) if c]
    with torch.inference_mode():
        from transformers import DynamicCache

        cache: Any = DynamicCache(config=model.config)
        out = model(input_ids=torch.tensor([ctx], dtype=torch.long, device=device), use_cache=True,
                    logits_to_keep=1, **cache_argument(model, cache))
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        for j in live:
            results[j] = float(first[conts[j][0]])
        width = max(len(conts[j]) for j in live) - 1 if live else 0
        if width <= 0:
            return results
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
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), **cache_argument(model, cache),
                       use_cache=True).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for r, j in enumerate(live):
            rest = conts[j][1:]
            if rest:
                target = torch.tensor(rest, dtype=torch.long, device=logprobs.device)
                results[j] += float(logprobs[r, :len(rest)].gather(-1, target[:, None]).sum())
    return results
