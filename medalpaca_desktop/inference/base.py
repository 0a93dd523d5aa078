"""The one backend protocol both inference engines implement (lm-eval's LM idea).

The host (host.py) owns the request loop, prompt formatting and events; a
backend only loads weights, tokenizes, streams tokens and scores. Backends are
found through a lazy name -> "module:Class" registry so that loading the
llama.cpp engine never imports torch and vice versa.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from medalpaca_desktop.core.chat_protocol import LoadSpec, SamplingSettings, StopReason

#: backend name -> "module:Class", imported only when that backend is used.
BACKEND_REGISTRY: dict[str, str] = {
    "llamacpp": "medalpaca_desktop.inference.llamacpp:LlamaCppBackend",
    "hf": "medalpaca_desktop.inference.hf:HFBackend",
}

ProgressCallback = Callable[[str, float | None], None]  # (message, fraction 0..1 or None)
TokenCallback = Callable[[str], None]  # a piece of decoded text
StopCheck = Callable[[], bool]  # True once the user asked to stop


class InferenceError(RuntimeError):
    """One clear message for a person, plus the error `kind` the host reports."""

    def __init__(self, message: str, kind: str = "internal") -> None:
        super().__init__(message)
        self.kind = kind


#: InferenceError kinds that are the request's fault (a worker exits with ExitCode.BAD_INPUT for them).
BAD_INPUT_KINDS = frozenset({"not_found", "corrupt", "unsupported", "pickle_refused", "too_large", "bad_request"})


@dataclass
class LoadedModel:
    """What the host reports after a load ("loaded" result event)."""

    backend: str
    path: str
    device: str  # "cpu", "cuda:0", "cpu+gpu(20 layers)" ...
    context_length: int
    quantization: str | None = None
    dtype: str | None = None
    adapter: str | None = None
    chat_template: str | None = None  # None: the model has none (a fallback is used)
    bos_token: str | None = None
    eos_token: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. why a GPU is not used


@dataclass
class GenerationStats:
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    tokens_per_s: float | None
    stop_reason: StopReason
    reused_prefix_tokens: int = 0  # KV cache hit on follow-up turns


class Backend(Protocol):
    name: str

    def load(self, spec: LoadSpec, progress: ProgressCallback) -> LoadedModel: ...

    def tokenize(self, text: str, add_special: bool = True) -> list[int]: ...

    def detokenize(self, ids: list[int]) -> str: ...

    @property
    def context_length(self) -> int: ...

    def generate(self, prompt_ids: list[int], sampling: SamplingSettings, on_text: TokenCallback,
                 should_stop: StopCheck) -> GenerationStats: ...

    def score(self, context: str, continuations: list[str], should_stop: StopCheck) -> list[float]: ...

    def unload(self) -> None: ...


def create_backend(name: str) -> Backend:
    """Instantiate a registered backend, importing its module only now."""
    try:
        target = BACKEND_REGISTRY[name]
    except KeyError:
        raise InferenceError(f"Unknown backend {name!r}; choose one of {', '.join(BACKEND_REGISTRY)}.",
                             "bad_request") from None
    module_name, _, class_name = target.partition(":")
    cls: Any = getattr(importlib.import_module(module_name), class_name)
    return cls()
