"""Requests the chat host reads on stdin, and the settings they carry.

Qt-free and torch-free so the GUI, the CLI and the host share one definition.
Each request is one JSON line with a `type` (load, generate, stop, score,
unload) and an `id` the host echoes in the events that answer it. Field help
doubles as the chat tab's tooltips.

Answers (core.events): `progress` while loading; `result` whose data is a core.payloads kind
"loaded" / "prompt" / "score" / "unloaded"; `token` (request_id) while
generating; `done` per generation with data {request_id, prompt_tokens,
completion_tokens, ttft_s, tokens_per_s, stop_reason}; `error` with `kind`
(not_found, corrupt, unsupported, too_large, oom, pickle_refused, not_loaded,
bad_request, internal) after which the host stays usable.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Backend = Literal["auto", "hf", "llamacpp"]
TemplateName = Literal["medalpaca", "chat", "raw"]
LoadIn = Literal["none", "8bit", "4bit"]
StopReason = Literal["eos", "stop_string", "length", "stopped", "context_full"]

BACKENDS: tuple[str, ...] = ("auto", "hf", "llamacpp")
TEMPLATES: tuple[str, ...] = ("medalpaca", "chat", "raw")
LOAD_IN: tuple[str, ...] = ("none", "8bit", "4bit")


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class SamplingSettings:
    """How the next answer is sampled; the same names as llama.cpp and transformers."""

    temperature: float = field(default=0.7, metadata=_help(
        "Randomness. 0 always picks the most likely token (reproducible); 0.7 is a common chat setting.",
        minimum=0.0, maximum=2.0))
    top_p: float = field(default=0.95, metadata=_help(
        "Nucleus sampling: only the most likely tokens whose probabilities add up to this are considered.",
        minimum=0.0, maximum=1.0))
    top_k: int = field(default=40, metadata=_help(
        "Only the k most likely tokens are considered (0 = no limit).", minimum=0, maximum=1000))
    repeat_penalty: float = field(default=1.0, metadata=_help(
        "Penalises tokens already used; 1.0 = off. Helps small models that repeat themselves.",
        minimum=0.5, maximum=2.0))
    max_tokens: int = field(default=512, metadata=_help(
        "Longest answer, in tokens.", minimum=1, maximum=32768))
    seed: int = field(default=-1, metadata=_help(
        "Random seed; -1 picks a new one each time. A fixed seed with the same settings repeats an answer.",
        minimum=-1, maximum=2**31 - 1))
    stop: list[str] = field(default_factory=list, metadata=_help(
        "Extra texts that end the answer when the model writes them."))

    @classmethod
    def field_help(cls, name: str) -> str:
        return str({f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}[name])

    def validate(self) -> None:
        """Raise ValueError naming the field that is out of range."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            lo, hi = f.metadata.get("minimum"), f.metadata.get("maximum")
            if lo is not None and value < lo or hi is not None and value > hi:
                raise ValueError(f"{f.name} must be between {lo} and {hi}, not {value}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError("stop must be a list of non-empty texts")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SamplingSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


@dataclass
class LoadSpec:
    """Which model to load and how."""

    model: str = field(default="", metadata=_help("A GGUF file or a Hugging Face model folder."))
    backend: str = field(default="auto", metadata=_help(
        "auto: llama.cpp for .gguf files, transformers for folders.", choices=BACKENDS))
    adapter: str | None = field(default=None, metadata=_help(
        "A LoRA adapter folder applied on top of a Hugging Face model (transformers only)."))
    load_in: str = field(default="none", metadata=_help(
        "Load a Hugging Face model's weights in 8-bit or 4-bit (NF4) with bitsandbytes to save memory.",
        choices=LOAD_IN))
    n_ctx: int = field(default=4096, metadata=_help(
        "Context window in tokens (llama.cpp); longer holds more history but needs more memory."))
    n_gpu_layers: int = field(default=-1, metadata=_help(
        "Layers of a GGUF model offloaded to the GPU; -1 = all, 0 = CPU only. Ignored without GPU support."))
    n_threads: int | None = field(default=None, metadata=_help("CPU threads; empty = the number of cores."))
    device: str = field(default="auto", metadata=_help(
        "transformers: auto (CUDA if present, else CPU), cuda or cpu.", choices=("auto", "cuda", "cpu")))
    allow_pickle: bool = field(default=False, metadata=_help(
        "Allow weights stored as pickle (.bin/.pt/.pth), which can run code when loaded."))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LoadSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


@dataclass
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass
class Request:
    """Base of the host's requests; `type` names the subclass on the wire."""

    type: ClassVar[str] = ""
    id: str = field(default_factory=_new_id)

    def to_dict(self) -> dict[str, Any]:
        data = {"type": self.type}
        data.update(dataclasses.asdict(self))
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass
class LoadRequest(Request):
    type: ClassVar[str] = "load"
    spec: LoadSpec = field(default_factory=LoadSpec)


@dataclass
class GenerateRequest(Request):
    """Answer the conversation (chat/medalpaca templates) or continue `prompt` (raw)."""

    type: ClassVar[str] = "generate"
    messages: list[ChatMessage] = field(default_factory=list)
    template: str = "chat"
    system: str | None = None
    prompt: str | None = None  # raw template: the exact text to continue
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    conversation_id: str | None = None  # KV-cache reuse is keyed on this
    documents: list[str] = field(default_factory=list)  # collections to answer from (documents.grounding)
    top_k: int = 4  # passages sent with the question when `documents` is set


@dataclass
class StopRequest(Request):
    type: ClassVar[str] = "stop"
    target: str | None = None  # the generate/score request to stop; None = whatever runs


@dataclass
class ScoreRequest(Request):
    """Log-likelihood of each continuation after the context (benchmark scoring)."""

    type: ClassVar[str] = "score"
    context: str = ""
    continuations: list[str] = field(default_factory=list)


@dataclass
class UnloadRequest(Request):
    type: ClassVar[str] = "unload"


REQUEST_CLASSES: dict[str, type[Request]] = {
    cls.type: cls for cls in (LoadRequest, GenerateRequest, StopRequest, ScoreRequest, UnloadRequest)
}


class BadRequest(ValueError):
    """A request line the host cannot act on; answered with an error event."""


def parse_request(line: str) -> Request:
    """Decode one stdin line into a request (BadRequest with a one-line reason otherwise)."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise BadRequest(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("a request is a JSON object")
    kind = data.get("type")
    cls = REQUEST_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadRequest(f"unknown request type {data.get('type')!r}; expected one of {', '.join(REQUEST_CLASSES)}")
    kwargs: dict[str, Any] = {}
    try:
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name == "spec":
                value = LoadSpec.from_dict(value)
            elif f.name == "sampling":
                value = SamplingSettings.from_dict(value)
                value.validate()
            elif f.name == "documents":
                if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                    raise ValueError("documents must be a list of collection names")
            elif f.name == "messages":
                value = [ChatMessage(role=str(m["role"]), content=str(m["content"])) for m in value]
            kwargs[f.name] = value
        return cls(**kwargs)
    except (TypeError, KeyError, ValueError) as exc:
        raise BadRequest(f"bad {cls.type} request: {exc}") from None
