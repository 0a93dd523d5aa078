"""The one backend interface both inference engines implement (lm-eval's TemplateLM idea).

The host (host.py) owns the request loop, prompt formatting and events; a
backend only loads weights, tokenizes, streams tokens and scores. Backends are
found through a lazy name -> "module:Class" registry so that loading the
llama.cpp engine never imports torch and vice versa.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
BAD_INPUT_KINDS = frozenset({"not_found", "corrupt", "unsupported", "pickle_refused", "too_large", "bad_request",
                             "no_tokenizer", "bad_adapter"})


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


@dataclass(frozen=True)
class Generation:
    """One answer of `Backend.generate_batch`: its whole text and how it ended."""

    text: str
    stats: GenerationStats


@dataclass(frozen=True)
class ScoreDetail:
    """lm-eval's loglikelihood answer for one continuation, plus its token count."""

    logprob: float  # sum of the continuation tokens' log-probabilities
    is_greedy: bool  # every continuation token is the model's most likely one
    tokens: int


#: Called with (the prompt's index, its answer) as each answer of `generate_batch` is final.
AnswerCallback = Callable[[int, Generation], None]

#: (context ids, one id list per continuation): a request after encode_pair.
EncodedRequest = tuple[list[int], list[list[int]]]


class Backend(abc.ABC):
    """What every inference engine offers the host and the benchmark, in the style of lm-eval's TemplateLM.

    Why an abstract base: callers use only what is declared here, and the
    encoding rule of lm-eval (`encode_pair`) is written once; a backend
    implements loading, tokenizing (`tok_encode`, `prefix_token_id`), generation
    and scoring of already-encoded requests.
    """

    name: ClassVar[str]
    #: True when `loglikelihood` and `generate_batch` put several requests in one forward pass, so callers
    #: send a batch at a time; False when the engine answers one request after another anyway.
    batches: ClassVar[bool] = False

    # ------------------------------------------------------------ model

    @abc.abstractmethod
    def load(self, spec: LoadSpec, progress: ProgressCallback) -> LoadedModel: ...

    @abc.abstractmethod
    def unload(self) -> None: ...

    @property
    @abc.abstractmethod
    def context_length(self) -> int: ...

    # ------------------------------------------------------------ tokens

    @abc.abstractmethod
    def tokenize(self, text: str, add_special: bool = True) -> list[int]: ...

    @abc.abstractmethod
    def detokenize(self, ids: list[int]) -> str: ...

    @abc.abstractmethod
    def tok_encode(self, text: str) -> list[int]:
        """`text` as it starts a sequence for scoring: the tokenizer's leading specials (BOS), no trailing ones."""

    @property
    @abc.abstractmethod
    def prefix_token_id(self) -> int | None:
        """What an empty context is conditioned on (BOS, else EOS); None when the model has neither."""

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) as lm-eval's `_encode_pair` forms them.

        Trailing spaces of the context move to the continuation; the
        continuation's ids are those of the whole text after the context's, so a
        word that merges across the boundary is scored as the model would write
        it; an empty context is the prefix token alone.
        """
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        if not context:
            prefix = self.prefix_token_id
            if prefix is None:
                raise InferenceError("An empty context needs a BOS or EOS token, and this model has neither.",
                                     "bad_request")
            return [int(prefix)], self.tokenize(continuation, add_special=False)
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        return ctx, whole[len(ctx):]

    def encode_request(self, context: str, continuations: list[str]) -> EncodedRequest:
        """One context with its continuations (the context's ids depend on the context alone)."""
        pairs = [self.encode_pair(context, c) for c in continuations]
        ctx = pairs[0][0] if pairs else self.encode_pair(context, "")[0]
        return ctx, [cont for _, cont in pairs]

    # ------------------------------------------------------------ generate

    @abc.abstractmethod
    def generate(self, prompt_ids: list[int], sampling: SamplingSettings, on_text: TokenCallback,
                 should_stop: StopCheck) -> GenerationStats:
        """Stream the answer to `prompt_ids` through `on_text`; counts, timings and why it ended."""

    def generate_batch(self, prompts: list[list[int]], samplings: list[SamplingSettings],
                       should_stop: StopCheck, slots: int | None = None,
                       on_answer: AnswerCallback | None = None) -> list[Generation]:
        """Answers to several prompts (a benchmark), each with its own sampling settings and seed.

        An answer does not depend on the other prompts of its batch, so a run
        resumed in the middle of a batch answers as an uninterrupted one would
        (up to floating-point differences between batch shapes). `slots` caps the
        prompts computed at once (None: the engine's choice); `on_answer(i, answer)`
        is called as each answer is final, so a caller can save it before the
        others end. After a stop, the answers not finished have stop_reason
        "stopped" and should be asked again. This default answers one prompt
        after another with `generate`.
        """
        answers: list[Generation] = []
        for i, (ids, sampling) in enumerate(zip(prompts, samplings, strict=True)):
            if should_stop():
                answers.append(Generation("", GenerationStats(len(ids), 0, None, None, "stopped")))
            else:
                pieces: list[str] = []
                stats = self.generate(ids, sampling, pieces.append, should_stop)
                answers.append(Generation("".join(pieces), stats))
            if on_answer is not None:
                on_answer(i, answers[-1])
        return answers

    @property
    def last_prompt_eval_tokens(self) -> int | None:
        """Prompt tokens the last `generate` actually evaluated (the rest came from the KV cache);
        None when the engine does not measure it."""
        return None

    # ------------------------------------------------------------ score

    def loglikelihood(self, requests: list[tuple[str, list[str]]], should_stop: StopCheck,
                      max_rows: int | None = None) -> list[list[float]]:
        """Log-likelihood of each continuation after its context, for many requests at once (benchmarks).

        Each prompt is computed once; `max_rows` caps the requests per forward
        pass where the engine batches them. A stop raises InferenceError "stopped".
        """
        return self._loglikelihood_tokens([self.encode_request(c, conts) for c, conts in requests], should_stop,
                                          max_rows)

    def score_details(self, context: str, continuations: list[str],
                      should_stop: StopCheck) -> list[ScoreDetail]:
        """lm-eval's loglikelihood (sum, greedy?) and the token count of each continuation, one by one."""
        return self._score_tokens(self.encode_request(context, continuations), should_stop)

    def score(self, context: str, continuations: list[str], should_stop: StopCheck) -> list[float]:
        """The log-likelihood sums of `score_details`."""
        return [d.logprob for d in self.score_details(context, continuations, should_stop)]

    @abc.abstractmethod
    def _loglikelihood_tokens(self, requests: list[EncodedRequest], should_stop: StopCheck,
                              max_rows: int | None) -> list[list[float]]:
        """`loglikelihood` on encoded requests: the engine's fast path (shared prefixes, batches)."""

    @abc.abstractmethod
    def _score_tokens(self, request: EncodedRequest, should_stop: StopCheck) -> list[ScoreDetail]:
        """`score_details` on one encoded request: each continuation scored on its own."""


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
