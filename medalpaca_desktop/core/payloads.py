"""What a `result` event carries (core.events.Result.data), one dataclass per `kind`.

The chat host answers a load with "loaded", a generate with "prompt" (the text
the model read) before its tokens and "generated" as the data of its `done`
event, a score with "score" and an unload with "unloaded"; the benchmark worker
reports each scored question as "item".
Writers build the dataclass and send `to_result()`; readers call
`parse_payload` (the one decoder), which, like core.events, keeps keys it does
not know in `extra` so a newer worker never breaks an older GUI. `request_id`
is a field of every payload that answers a request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from medalpaca_desktop.core.events import Done, Result

OPTIONAL = {"optional": True}  # field metadata: left off the wire while it is None

P = TypeVar("P", bound="Payload")


@dataclass
class Payload:
    """Base of every result payload; `kind` names the subclass on the wire."""

    kind: ClassVar[str] = ""
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            data[f.name] = _plain(value)
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    def to_result(self) -> Result:
        return Result(data=self.to_data())

    @classmethod
    def _from_data(cls: type[P], data: dict[str, Any]) -> P:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k != "kind"}
        return cls(**known, extra=extra)


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


@dataclass
class Loaded(Payload):
    """The model the host loaded (inference.base.LoadedModel, plus how long it took)."""

    kind: ClassVar[str] = "loaded"
    request_id: str | None = None
    path: str = ""
    backend: str = ""
    device: str = ""
    context_length: int | None = None
    quantization: str | None = None
    dtype: str | None = None
    adapter: str | None = None
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    notes: list[str] = field(default_factory=list)
    load_s: float | None = None
    chat_fallback: str | None = field(default=None, metadata=OPTIONAL)  # the format used without a chat template

    @property
    def backend_label(self) -> str:
        return {"llamacpp": "llama.cpp", "hf": "transformers"}.get(self.backend, self.backend or "?")

    def summary(self) -> str:
        """'llama.cpp · Q4_1 · cpu · 4,096-token context'."""
        parts = [self.backend_label]
        if self.quantization:
            parts.append(str(self.quantization))
        elif self.dtype:
            parts.append(str(self.dtype))
        if self.device:
            parts.append(self.device)
        if self.context_length:
            parts.append(f"{self.context_length:,}-token context")
        if self.chat_fallback:
            parts.append(f"no chat template: {self.chat_fallback} format used")
        return " · ".join(parts)


@dataclass
class Unloaded(Payload):
    kind: ClassVar[str] = "unloaded"
    request_id: str | None = None


@dataclass
class Prompt(Payload):
    """The exact text a generate request was answered from, and its size."""

    kind: ClassVar[str] = "prompt"
    request_id: str | None = None
    text: str = ""
    tokens: int | None = None
    template: str | None = None
    fallback: str | None = None  # "chatml" / "medalpaca" when the model has no chat template
    dropped_messages: int = 0  # oldest turns left out to fit the context
    truncated: bool = False
    context_length: int | None = None
    add_special: bool | None = None


@dataclass
class Score(Payload):
    """Log-likelihood of each continuation (and, where the backend says, greedy match and length)."""

    kind: ClassVar[str] = "score"
    request_id: str | None = None
    logprobs: list[float] = field(default_factory=list)
    is_greedy: list[bool] | None = field(default=None, metadata=OPTIONAL)
    tokens: list[int] | None = field(default=None, metadata=OPTIONAL)


@dataclass
class Generated(Payload):
    """A generate request's end: the data of its `done` event (the whole answer and how it went).

    Every field but `request_id` is None when the host had nothing to report
    (the request failed, or was stopped before the answer began).
    """

    kind: ClassVar[str] = "generated"
    request_id: str | None = None
    text: str | None = field(default=None, metadata=OPTIONAL)  # the host's own account of the answer
    prompt_tokens: int | None = field(default=None, metadata=OPTIONAL)
    completion_tokens: int | None = field(default=None, metadata=OPTIONAL)
    ttft_s: float | None = field(default=None, metadata=OPTIONAL)  # seconds to the first token
    tokens_per_s: float | None = field(default=None, metadata=OPTIONAL)
    stop_reason: str | None = field(default=None, metadata=OPTIONAL)  # core.chat_protocol.StopReason
    reused_prefix_tokens: int | None = field(default=None, metadata=OPTIONAL)  # KV cache hit
    prompt_eval_tokens: int | None = field(default=None, metadata=OPTIONAL)  # prompt tokens evaluated anew
    dropped_messages: int | None = field(default=None, metadata=OPTIONAL)  # oldest turns left out

    def to_done(self, *, ok: bool = True, stopped: bool = False) -> Done:
        return Done(ok=ok, stopped=stopped, data=self.to_data())

    def stats(self) -> dict[str, Any]:
        """What a chat message keeps of it (its meta["stats"]): the figures, without request id and text."""
        data = self.to_data()
        for key in ("kind", "request_id", "text"):
            data.pop(key, None)
        return data


@dataclass
class GeneratedAnswer:
    """An item's answer in generate mode (bench.scoring.generate_item)."""

    pred_paper: str | None = None  # parsed with the paper's rule
    pred_lenient: str | None = None
    seed: int | None = None
    tokens: int | None = field(default=None, metadata=OPTIONAL)  # absent when the prompt did not fit
    stop_reason: str | None = field(default=None, metadata=OPTIONAL)


@dataclass
class OptionScores:
    """An item's option scores in loglikelihood mode (bench.scoring.loglikelihood_items)."""

    scores: dict[str, float] = field(default_factory=dict)
    scores_norm: dict[str, float] = field(default_factory=dict)  # divided by the option's length in characters
    pred_norm: str | None = None
    correct_norm: bool = False


@dataclass
class Item(Payload):
    """One scored benchmark question, flat on the wire as in items.jsonl (without its prompt).

    Exactly one of `generated` / `option_scores` is set, by the scoring mode; their
    fields sit at the top level of the data, so the keys present say the mode.
    """

    kind: ClassVar[str] = "item"
    id: str = ""
    step: str = ""
    question: str = ""
    options: dict[str, str] = field(default_factory=dict)
    gold: str | None = None
    pred: str | None = None
    correct: bool = False
    output: str = ""
    latency_s: float | None = field(default=None, metadata=OPTIONAL)
    error: str | None = field(default=None, metadata=OPTIONAL)  # the prompt did not fit: counted wrong
    generated: GeneratedAnswer | None = None
    option_scores: OptionScores | None = None

    _PARTS: ClassVar[dict[str, type]] = {"generated": GeneratedAnswer, "option_scores": OptionScores}

    def to_data(self) -> dict[str, Any]:
        data = super().to_data()
        for name in self._PARTS:
            part = data.pop(name)
            if part is not None:
                value = getattr(self, name)
                for f in dataclasses.fields(value):
                    if getattr(value, f.name) is not None or not f.metadata.get("optional"):
                        data.setdefault(f.name, part[f.name])
        return data

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> Item:
        rest = dict(data)
        parts: dict[str, Any] = {}
        for name, part_cls in cls._PARTS.items():
            names = [f.name for f in dataclasses.fields(part_cls)]
            if any(n in rest for n in names):
                parts[name] = part_cls(**{n: rest.pop(n) for n in names if n in rest})
        for name in cls._PARTS:
            rest.pop(name, None)  # a nested form is not this wire format
        item = super()._from_data(rest)
        for name, value in parts.items():
            setattr(item, name, value)
        return item


@dataclass
class Sources(Payload):
    """The passages retrieved for a generate request with documents, sent before its prompt.

    Each source is documents.grounding.Source as a dict (n, chunk_id, path, page, section, start, end,
    text, collection); `nothing_found` says no passage matched, and the model was told so.
    """

    kind: ClassVar[str] = "sources"
    request_id: str | None = None
    collections: list[str] = field(default_factory=list)
    query: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    nothing_found: bool = False
    mode: str = "bm25"  # "bm25" or "hybrid" (BM25 fused with the collection's embeddings)


@dataclass
class IndexedFile(Payload):
    """One file an indexing job handled: indexed (pages, passages) or failed (the reason)."""

    kind: ClassVar[str] = "indexed_file"
    collection: str = ""
    path: str = ""
    status: str = "indexed"  # "indexed" / "failed" / "removed"
    pages: int = 0
    chunks: int = 0
    error: str | None = field(default=None, metadata=OPTIONAL)


@dataclass
class Indexed(Payload):
    """An indexing job's totals, the last result before its `done`."""

    kind: ClassVar[str] = "indexed"
    collection: str = ""
    indexed: int = 0
    unchanged: int = 0
    failed: int = 0
    removed: int = 0
    pages: int = 0
    chunks: int = 0
    seconds: float = 0.0


PAYLOAD_CLASSES: dict[str, type[Payload]] = {
    cls.kind: cls for cls in (Loaded, Unloaded, Prompt, Score, Generated, Item, Sources, IndexedFile, Indexed)}


def parse_payload(data: Any) -> Payload | None:
    """The payload of a result event's data; None for a kind this version does not know (or no dict)."""
    if not isinstance(data, dict):
        return None
    kind = data.get("kind")
    cls = PAYLOAD_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None
    try:
        return cls._from_data(data)
    except TypeError:
        return None
