"""Training data: load and check records, build prompts, tokenize, split, mix, pack.

The run engine calls two functions:

- `load_records(config)` reads and checks every source before any model loads
  (errors name file and line; formats read by core/records.py, checked by trainer/data_sources.py);
- `build_datasets(config, tokenizer)` returns `PreparedData`: tokenized train and
  validation `datasets.Dataset`s, token-length statistics and notes for the log.

Prompts. ``template: medalpaca`` writes exactly what the chat tab sends a
MedAlpaca model (medalpaca_desktop.core.prompts, the paper repository's
DataHandler.generate_prompt): primer, "### Instruction:", "### Input:" (present
even when the input is empty, as in the repository and at chat time),
"### Response:", answer. ``template: chat`` renders the tokenizer's chat
template with the same sandboxed renderer the chat tab uses: one user turn
(instruction, a blank line, input) and one assistant turn (output).

Tokens. The prompt and the full text are tokenized separately; the label mask
starts where their tokens first differ (normally the prompt's length). The
answer ends with the tokenizer's EOS exactly once: a chat template that already
writes EOS is cut right after it (ChatML's trailing newline dropped), otherwise
the EOS id is appended. `train_on_inputs: false` sets prompt labels to -100.
Examples longer than `max_length` are cut there (the EOS is lost with the
tail, as the answer did not end); an example whose answer has no token left
is dropped, because an all -100 batch gives a NaN loss.

Split and mix. `val_split` holds out a shuffled (seeded) share of each source's
unique records before mixing, so a record repeated by a weight never sits in
both splits. With `data_weights` w_i the training mix keeps the total number of
training records T = sum(n_i) and gives source i round(T * w_i / sum(w))
examples: whole copies of the source, then a seeded random subset for the
rest. Example: two sources of 100 records, weights 2 and 1 -> 133 and 67
examples (each record of the first seen ~1.33 times per epoch, two thirds of
the second seen once). The
mix is shuffled with the seed. Validation is not weighted.

Packing (`packing: true`). Examples are placed first-fit into rows of exactly
`max_length` tokens; the tail is padding. Rows carry `position_ids` that restart
at 0 for every example (and for the padding) and NO `attention_mask`: given
position ids and no mask, transformers builds a block-diagonal causal mask
(masking_utils.find_packed_sequence_indices), so an example never attends to
its neighbours -- provided the collator adds no attention_mask (use
`make_collator`; DataCollatorForSeq2Seq adds one and so re-opens attention
across examples) and the model runs without a KV cache (train with
`model.config.use_cache = False`; with a cache transformers ignores the position
ids for masking). The first token of every example and all padding get label
-100, so no token is predicted across a boundary. `make_collator(data, tokenizer)`
picks the collator: `default_data_collator` for packed rows, otherwise
`DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)` (pads per batch).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.data_sources import DataError, Record, read_sources

if TYPE_CHECKING:  # heavy imports stay out of module import
    import datasets

    from trainer.config import TrainConfig

__all__ = ["IGNORE", "DataError", "Record", "LengthStats", "PreparedData", "SourceSummary", "Example",
           "load_records", "build_datasets", "build_prompt", "tokenize_record", "length_stats",
           "split_records", "mix_sources", "pack_examples", "mix_counts", "make_collator"]

IGNORE = -100


# ------------------------------------------------------------------ results


@dataclass
class LengthStats:
    """Token lengths of the full examples (prompt + answer + EOS) before truncation; shown by the wizard."""

    count: int
    mean: float
    p50: int
    p95: int
    max: int
    max_length: int
    truncated: int  # examples longer than max_length
    truncated_share: float  # truncated / count

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LengthStats:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def summary(self) -> str:
        return (f"{self.count} examples, tokens mean {self.mean:.0f}, median {self.p50}, p95 {self.p95}, "
                f"max {self.max}; {self.truncated} ({self.truncated_share:.1%}) longer than {self.max_length}")


@dataclass
class SourceSummary:
    """One source's share of the run, for the log and the model card."""

    source: str
    records: int
    train: int  # examples in the training mix (after the weight)
    val: int
    weight: float


@dataclass
class PreparedData:
    """What the trainer needs: datasets with input_ids/labels (+attention_mask or position_ids), stats, notes."""

    train: datasets.Dataset
    val: datasets.Dataset | None
    stats: LengthStats
    notes: list[str] = field(default_factory=list)
    sources: list[SourceSummary] = field(default_factory=list)
    template: str = "medalpaca"
    eos_token: str = ""
    packed: bool = False


@dataclass
class Example:
    """One tokenized example; `full_length` is before truncation."""

    input_ids: list[int]
    labels: list[int]
    full_length: int
    boundary_moved: bool = False


# ------------------------------------------------------------------ loading


def load_records(config: TrainConfig) -> list[Record]:
    """Read and check every source of config.data (no tokenizer needed); raises DataError."""
    return [r for records in read_sources(list(config.data)) for r in records]


# ------------------------------------------------------------------ prompts


def _user_text(record: Record) -> str:
    return f"{record.instruction}\n\n{record.input}" if record.input.strip() else record.instruction


def build_prompt(record: Record, template: str, tokenizer: Any = None) -> tuple[str, str]:
    """(prompt text, full text) for one record; full = prompt + answer, before EOS handling."""
    from medalpaca_desktop.core.chat_protocol import ChatMessage
    from medalpaca_desktop.core.prompts import PromptError, medalpaca_template, render_chat_template

    if template == "medalpaca":
        tpl = medalpaca_template()
        prompt = tpl.prompt(record.instruction, record.input)
        return prompt, prompt + record.output
    if template != "chat":
        raise DataError(f"template: {template!r} is not medalpaca or chat")
    chat_template = getattr(tokenizer, "chat_template", None)
    if not chat_template:
        raise DataError("template: chat, but the tokenizer has no chat template; use template: medalpaca")
    user = ChatMessage("user", _user_text(record))
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    try:
        prompt = render_chat_template(chat_template, [user], bos, eos, add_generation_prompt=True)
        full = render_chat_template(chat_template, [user, ChatMessage("assistant", record.output)], bos, eos,
                                    add_generation_prompt=False)
    except PromptError as exc:
        raise DataError(f"{record.where}: {exc}") from None
    return prompt, full


# ------------------------------------------------------------------ tokens


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _end_with_eos(answer: list[int], eos_id: int) -> list[int]:
    """Cut after the first EOS the template wrote, or append one: EOS exactly once, at the end."""
    if eos_id in answer:
        return answer[: answer.index(eos_id) + 1]
    return answer + [eos_id]


def _assemble(prompt_ids: list[int], full_ids: list[int], eos_id: int, train_on_inputs: bool,
              max_length: int) -> Example:
    """Join prompt and answer tokens, mask the prompt, end with EOS, truncate."""
    boundary = _common_prefix(prompt_ids, full_ids)
    ids = full_ids[:boundary] + _end_with_eos(full_ids[boundary:], eos_id)
    labels = list(ids) if train_on_inputs else [IGNORE] * boundary + ids[boundary:]
    return Example(ids[:max_length], labels[:max_length], len(ids), boundary != len(prompt_ids))


def _eos_id(tokenizer: Any) -> int:
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if eos_id is None:
        raise DataError("the tokenizer has no EOS token; training would never learn to stop")
    return int(eos_id)


def tokenize_records(records: Sequence[Record], tokenizer: Any, template: str, train_on_inputs: bool,
                     max_length: int) -> list[Example]:
    """Tokenize in batches (fast tokenizers do the work in Rust)."""
    if not records:
        return []
    eos_id = _eos_id(tokenizer)
    texts = [build_prompt(r, template, tokenizer) for r in records]
    # A rendered chat template already holds its special tokens (as at chat time); MedAlpaca text gets BOS.
    special = template == "medalpaca"
    prompts = tokenizer([p for p, _ in texts], add_special_tokens=special)["input_ids"]
    fulls = tokenizer([f for _, f in texts], add_special_tokens=special)["input_ids"]
    return [_assemble(list(p), list(f), eos_id, train_on_inputs, max_length) for p, f in zip(prompts, fulls)]


def tokenize_record(record: Record, tokenizer: Any, template: str = "medalpaca", train_on_inputs: bool = False,
                    max_length: int = 256) -> Example:
    """One record's tokens and labels (tests, previews)."""
    return tokenize_records([record], tokenizer, template, train_on_inputs, max_length)[0]


# ------------------------------------------------------------------ statistics


def _percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile: a length some example really has."""
    if not sorted_values:
        return 0
    rank = max(1, -(-len(sorted_values) * q // 100))
    return int(sorted_values[int(rank) - 1])


def length_stats(lengths: Sequence[int], max_length: int) -> LengthStats:
    """Summary of full example lengths and how many max_length would cut."""
    values = sorted(lengths)
    count = len(values)
    truncated = sum(1 for v in values if v > max_length)
    return LengthStats(
        count=count,
        mean=round(sum(values) / count, 2) if count else 0.0,
        p50=_percentile(values, 50),
        p95=_percentile(values, 95),
        max=values[-1] if values else 0,
        max_length=max_length,
        truncated=truncated,
        truncated_share=round(truncated / count, 4) if count else 0.0,
    )


# ------------------------------------------------------------------ split and mix


def split_records(records: Sequence[Any], val_split: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, val): a seeded shuffle, then the first round(n * val_split) go to validation.

    At least one validation record when val_split > 0 and there are two or more records; the
    training part is never empty. The same seed and records give the same split.
    """
    items = list(records)
    random.Random(seed).shuffle(items)
    n_val = int(round(len(items) * val_split)) if val_split > 0 else 0
    if val_split > 0 and n_val == 0 and len(items) >= 2:
        n_val = 1
    n_val = min(n_val, len(items) - 1) if items else 0
    return items[n_val:], items[:n_val]


def mix_counts(sizes: Sequence[int], weights: Sequence[float]) -> list[int]:
    """Examples per source in the mix: total kept at sum(sizes), shared in proportion to the weights."""
    if not weights:
        return list(sizes)
    total, weight_sum = sum(sizes), float(sum(weights))
    return [int(round(total * w / weight_sum)) if n else 0 for n, w in zip(sizes, weights)]


def _sample(items: Sequence[Any], count: int, rng: random.Random) -> list[Any]:
    """`count` items: whole copies, then a random subset without replacement."""
    if not items:
        return []
    copies, rest = divmod(count, len(items))
    return list(items) * copies + rng.sample(list(items), rest)


def mix_sources(per_source: Sequence[Sequence[Any]], weights: Sequence[float], seed: int) -> list[Any]:
    """The weighted, shuffled training mix (see module docstring for the counts)."""
    rng = random.Random(seed)
    counts = mix_counts([len(s) for s in per_source], weights)
    mixed = [item for items, count in zip(per_source, counts) for item in _sample(items, count, rng)]
    rng.shuffle(mixed)
    return mixed


# ------------------------------------------------------------------ packing


def _first_fit(lengths: Sequence[int], capacity: int, open_bins: int = 16) -> list[list[int]]:
    """Indices grouped into bins of at most `capacity` tokens; only the last few bins stay open (fast)."""
    bins: list[list[int]] = []
    room: list[int] = []
    first_open = 0
    for i, n in enumerate(lengths):
        for b in range(first_open, len(bins)):
            if room[b] >= n:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(capacity - n)
            first_open = max(0, len(bins) - open_bins)
    return bins


def pack_examples(examples: Sequence[Example], max_length: int, pad_id: int) -> dict[str, list[list[int]]]:
    """Rows of exactly max_length tokens with per-example position_ids and boundary-safe labels."""
    rows: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for group in _first_fit([len(e.input_ids) for e in examples], max_length):
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in group:
            ex = examples[i]
            ids += ex.input_ids
            labels += [IGNORE] + ex.labels[1:]  # never predict a first token from the previous example
            positions += list(range(len(ex.input_ids)))
        pad = max_length - len(ids)
        rows["input_ids"].append(ids + [pad_id] * pad)
        rows["labels"].append(labels + [IGNORE] * pad)
        rows["position_ids"].append(positions + list(range(pad)))
    return rows


# ------------------------------------------------------------------ datasets


def _trainable(examples: Sequence[Example]) -> list[Example]:
    return [e for e in examples if any(label != IGNORE for label in e.labels[1:])]


def _to_dataset(examples: Sequence[Example], config: TrainConfig, pad_id: int) -> datasets.Dataset:
    import datasets

    if config.packing:
        return datasets.Dataset.from_dict(pack_examples(examples, config.max_length, pad_id))
    return datasets.Dataset.from_dict({
        "input_ids": [e.input_ids for e in examples],
        "attention_mask": [[1] * len(e.input_ids) for e in examples],
        "labels": [e.labels for e in examples],
    })


def _tokenize_sources(per_source: list[list[Record]], tokenizer: Any, config: TrainConfig) -> list[list[Example]]:
    flat = [r for records in per_source for r in records]
    examples = tokenize_records(flat, tokenizer, config.template, config.train_on_inputs, config.max_length)
    out, start = [], 0
    for records in per_source:
        out.append(examples[start:start + len(records)])
        start += len(records)
    return out


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else _eos_id(tokenizer)


def build_datasets(config: TrainConfig, tokenizer: Any) -> PreparedData:
    """Records -> tokenized, split, weighted (and optionally packed) datasets with statistics."""
    per_source = read_sources(list(config.data))
    tokenized = _tokenize_sources(per_source, tokenizer, config)
    all_examples = [e for group in tokenized for e in group]
    stats = length_stats([e.full_length for e in all_examples], config.max_length)
    notes = [f"template: {config.template}; every answer ends with {tokenizer.eos_token!r}; "
             + ("prompt tokens count in the loss" if config.train_on_inputs else "prompt tokens masked from the loss"),
             stats.summary()]

    splits = [split_records(_trainable(group), config.val_split, config.seed + i) for i, group in enumerate(tokenized)]
    dropped = len(all_examples) - sum(len(t) + len(v) for t, v in splits)
    if dropped:
        notes.append(f"{dropped} example(s) left out: the prompt alone fills max_length {config.max_length}, "
                     "so no answer token is left to learn")
    moved = sum(e.boundary_moved for e in all_examples)
    if moved:
        notes.append(f"{moved} example(s): the tokenizer merged the last prompt token with the answer; "
                     "the loss mask starts at the first differing token")
    train_parts = [t for t, _ in splits]
    train = mix_sources(train_parts, list(config.data_weights), config.seed)
    val = [e for _, v in splits for e in v]
    counts = mix_counts([len(t) for t in train_parts], list(config.data_weights))
    sources = [SourceSummary(text, len(records), count, len(v), w)
               for text, records, count, (_, v), w in zip(config.data, per_source, counts, splits,
                                                          list(config.data_weights) or [1.0] * len(config.data))]
    if config.data_weights:
        notes += [f"mix: {s.source} {s.train} training examples from {len(t)} records (weight {s.weight:g})"
                  for s, t in zip(sources, train_parts)]
    if not train:
        raise DataError("training data: no usable example left (every prompt is longer than max_length?)")
    pad_id = _pad_id(tokenizer)
    train_ds = _to_dataset(train, config, pad_id)
    val_ds = _to_dataset(val, config, pad_id) if val else None
    if config.packing:
        notes.append(f"packing: {len(train)} examples in {len(train_ds)} rows of {config.max_length} tokens "
                     f"({sum(len(e.input_ids) for e in train) / max(1, len(train_ds) * config.max_length):.0%} "
                     "filled); examples do not attend to each other (position_ids, no attention_mask; "
                     "needs model.config.use_cache = False)")
    return PreparedData(train=train_ds, val=val_ds, stats=stats, notes=notes, sources=sources,
                        template=config.template, eos_token=str(tokenizer.eos_token), packed=config.packing)


def make_collator(data: PreparedData, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
    """The batch collator for these datasets; packed rows must not get an attention_mask (see module doc)."""
    from transformers import DataCollatorForSeq2Seq, default_data_collator

    if data.packed:
        return default_data_collator
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE,
                                  pad_to_multiple_of=pad_to_multiple_of)
