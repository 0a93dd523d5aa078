"""GGUF models through llama-cpp-python, close enough to the metal to stop and reuse.

Why not `create_completion`: the host must stop prompt evaluation (llama.cpp's
abort callback), count tokens, know how much of the KV cache a follow-up turn
reused, and score continuations. `Llama.generate` gives all of that while keeping
the library's own sampler chain and its longest-common-prefix KV reuse, so a
greedy answer here is token for token the library's `create_completion`:
the same BOS/EOS rules (`tokenize(add_bos=...)` follows the model's add_bos flag),
the same end-of-generation test (`llama_vocab_is_eog`) and the same
detokenisation (special tokens are not rendered).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from medalpaca_desktop.core import gguf_meta
from medalpaca_desktop.core.chat_protocol import LoadSpec, SamplingSettings, StopReason
from medalpaca_desktop.core.model_info import ModelInspectError
from medalpaca_desktop.core.models import inspect_model
from medalpaca_desktop.inference.base import (
    Backend,
    EncodedRequest,
    GenerationStats,
    InferenceError,
    LoadedModel,
    ProgressCallback,
    ScoreDetail,
    StopCheck,
    TokenCallback,
)
from medalpaca_desktop.inference.memory import MemoryRefusal, check_fits, estimate_gguf, free_vram

log = logging.getLogger(__name__)

NO_GPU_OFFLOAD_NOTE = ("A GPU is present but this llama-cpp-python was built without GPU offload, so the model "
                       "runs on the CPU. Reinstall it with CMAKE_ARGS=\"-DGGML_CUDA=on\" to use the GPU.")

# ------------------------------------------------------------------ llama.cpp's log

_recent_log: collections.deque[str] = collections.deque(maxlen=40)
_last_level = 0


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """Keep llama.cpp's recent warnings/errors (to explain a failed load) and pass them to stderr."""
    global _last_level
    if level != 5:
        _last_level = level
    if _last_level in (3, 4):  # ggml: 1 debug, 2 info, 3 warn, 4 error, 5 continues the last line
        line = text.decode("utf-8", errors="replace")
        _recent_log.append(line)
        sys.stderr.write(line)


llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def _gpu_present() -> bool:
    """An NVIDIA GPU exists (without importing torch): the driver's proc entry or nvidia-smi."""
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        if gpus.is_dir() and any(gpus.iterdir()):
            return True
    except OSError:
        pass
    return shutil.which("nvidia-smi") is not None and free_vram() is not None


def _utf8_split(data: bytes) -> tuple[bytes, bytes]:
    """(complete UTF-8 text, an unfinished multi-byte character at the end)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return (data, b"") if need <= back else (data[:-back], data[-back:])
    return data, b""


def _stop_hold(text: str, stops: list[str]) -> int:
    """How many trailing characters might be the start of a stop string (held back, not streamed)."""
    hold = 0
    for s in stops:
        for i in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:i]):
                hold = max(hold, i)
                break
    return hold


class LlamaCppBackend(Backend):
    """One GGUF model in one llama.cpp context (the host serialises requests)."""

    name = "llamacpp"

    def __init__(self, exact_kv_cache: bool = False) -> None:
        """`exact_kv_cache`: keep the KV cache in f32 instead of f16 (for comparing logits with another engine)."""
        self._llm: Any = None
        self._exact_kv_cache = exact_kv_cache
        self._should_stop: StopCheck = lambda: False
        self._abort_cb = llama_cpp.ggml_abort_callback(self._abort_requested)
        self._abort_off = llama_cpp.ggml_abort_callback()  # NULL: no per-node callback while decoding
        self._prompt_eval_tokens = 0  # measured by llama.cpp's perf counters

    # ---------------------------------------------------------------- load

    def load(self, spec: LoadSpec, progress: ProgressCallback) -> LoadedModel:
        path = Path(spec.model).expanduser()
        if not path.exists():
            raise InferenceError(f"Model file not found: {path}", "not_found")
        if path.is_dir():
            raise InferenceError(f"{path} is a folder: GGUF models are single .gguf files "
                                 "(use the transformers backend for Hugging Face folders).", "bad_request")
        progress("Reading model metadata", 0.02)
        try:
            info = inspect_model(path)
            header = gguf_meta.read_gguf_header(path)
        except (ModelInspectError, gguf_meta.GGUFFormatError, OSError) as exc:
            raise InferenceError(f"Cannot load {path.name}: {getattr(exc, 'reason', exc)}", "corrupt") from None
        if info.kind != "gguf":
            raise InferenceError(f"{path.name} is not a GGUF file.", "unsupported")
        arch = info.architecture or ""
        train_ctx = info.context_length or spec.n_ctx
        n_ctx = min(spec.n_ctx, train_ctx) if spec.n_ctx > 0 else train_ctx
        notes: list[str] = []
        if spec.n_ctx > train_ctx:
            notes.append(f"Context set to {train_ctx} tokens, the most this model was trained for.")
        offload = bool(llama_cpp.llama_supports_gpu_offload())
        n_gpu_layers = spec.n_gpu_layers if offload else 0
        if not offload and _gpu_present():
            notes.append(NO_GPU_OFFLOAD_NOTE)

        progress("Checking memory", 0.05)
        est = estimate_gguf(info, n_ctx, n_gpu_layers, header.get(f"{arch}.attention.head_count"),
                            header.get(f"{arch}.attention.head_count_kv"))
        try:
            check_fits(est, vram=free_vram() if n_gpu_layers else None, gguf=True)
        except MemoryRefusal as exc:
            raise InferenceError(str(exc), "too_large") from None

        progress("Loading weights", 0.1)
        _recent_log.clear()
        kwargs: dict[str, Any] = {"n_ctx": n_ctx, "n_gpu_layers": n_gpu_layers, "verbose": False}
        if spec.n_threads:
            kwargs.update(n_threads=spec.n_threads, n_threads_batch=spec.n_threads)
        if self._exact_kv_cache:
            kwargs.update(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
        try:
            self._llm = llama_cpp.Llama(str(path), **kwargs)
        except MemoryError:
            raise InferenceError("Out of memory while loading the model: choose a smaller quantization or a "
                                 "shorter context.", "oom") from None
        except (ValueError, RuntimeError) as exc:
            raise self._load_error(path, exc) from None
        progress("Ready", 1.0)

        llm = self._llm
        bos_id, eos_id = llm.token_bos(), llm.token_eos()
        gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else int(info.extra.get("block_count") or 0)
        return LoadedModel(
            backend=self.name,
            path=str(path),
            device=f"cpu+gpu({gpu_layers} layers)" if offload and n_gpu_layers else "cpu",
            context_length=llm.n_ctx(),
            quantization=info.quantization,
            chat_template=llm.metadata.get("tokenizer.chat_template") or None,
            bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
            eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
            notes=notes,
        )

    @staticmethod
    def _load_error(path: Path, exc: Exception) -> InferenceError:
        """Say why llama.cpp refused the file, from what it logged."""
        logged = "".join(_recent_log).strip()
        reason = next((ln.strip() for ln in reversed(logged.splitlines()) if "error" in ln.lower()), "")
        if "unknown model architecture" in logged or "unsupported model architecture" in logged:
            return InferenceError(f"llama.cpp does not support this model's architecture ({reason}).", "unsupported")
        detail = f": {reason}" if reason else f" ({exc})"
        return InferenceError(f"llama.cpp could not load {path.name}; the file may be damaged or incomplete{detail}",
                              "corrupt")

    def _require(self) -> Any:
        if self._llm is None:
            raise InferenceError("No model is loaded.", "not_loaded")
        return self._llm

    # ---------------------------------------------------------------- tokens

    @property
    def context_length(self) -> int:
        return int(self._require().n_ctx())

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Special-token text (<|im_start|>) is always parsed; `add_special` adds the model's BOS/EOS flags."""
        return list(self._require().tokenize(text.encode("utf-8"), add_bos=add_special, special=True))

    def detokenize(self, ids: list[int]) -> str:
        return self._require().detokenize(list(ids)).decode("utf-8", errors="replace")

    def tok_encode(self, text: str) -> list[int]:
        """As the model starts a sequence (its add_bos flag), special-token text parsed."""
        return self.tokenize(text)

    @property
    def prefix_token_id(self) -> int | None:
        llm = self._require()
        for token in (llm.token_bos(), llm.token_eos()):
            if token != -1:
                return int(token)
        return None

    # ---------------------------------------------------------------- stop

    def _abort_requested(self, _data: ctypes.c_void_p) -> bool:
        try:
            return bool(self._should_stop())
        except Exception:  # noqa: BLE001 - an exception must never cross into C
            return False

    def _abort_during_eval(self, on: bool) -> None:
        """The abort callback runs once per graph node: on for prompt evaluation, off for single tokens."""
        llama_cpp.llama_set_abort_callback(self._llm.ctx, self._abort_cb if on else self._abort_off, None)

    def _reusable_prefix(self, tokens: list[int]) -> int:
        """How many leading tokens Llama.generate will keep in the KV cache (its own rule)."""
        llm = self._llm
        if llm.n_tokens == 0:
            return 0
        common = 0
        for a, b in zip(llm._input_ids.tolist(), tokens):
            if a != b:
                break
            common += 1
        if common == len(tokens):
            return common if llm.n_tokens == len(tokens) and not llm._requires_eval else common - 1
        return common

    # ---------------------------------------------------------------- generate

    def generate(self, prompt_ids: list[int], sampling: SamplingSettings, on_text: TokenCallback,
                 should_stop: StopCheck) -> GenerationStats:
        llm = self._require()
        n_ctx = llm.n_ctx()
        if len(prompt_ids) >= n_ctx:
            raise InferenceError(f"The prompt has {len(prompt_ids)} tokens; the context holds {n_ctx}.",
                                 "context_full")
        max_new = min(sampling.max_tokens, n_ctx - len(prompt_ids))
        stops = [s for s in sampling.stop if s]
        llm.set_seed(sampling.seed if sampling.seed >= 0 else random.randrange(2**31))
        reused = self._reusable_prefix(prompt_ids)
        vocab = llm._model.vocab

        self._should_stop = should_stop
        llama_cpp.llama_synchronize(llm.ctx)  # settle counters of an aborted decode first
        llama_cpp.llama_perf_context_reset(llm.ctx)
        self._abort_during_eval(True)
        t0 = time.perf_counter()
        t_first: float | None = None
        completion: list[int] = []
        answer = b""  # the answer's bytes (a multi-byte character may be split across tokens)
        multibyte_fix = 0
        text = ""  # complete characters of the answer
        sent = 0  # characters of `text` already streamed
        reason: StopReason = "length"
        gen = llm.generate(prompt_ids, top_k=sampling.top_k, top_p=sampling.top_p, min_p=0.0, typical_p=1.0,
                           temp=sampling.temperature, repeat_penalty=sampling.repeat_penalty)
        try:
            for token in gen:
                if t_first is None:
                    t_first = time.perf_counter()
                    self._abort_during_eval(False)
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    reason = "eos"
                    break
                completion.append(token)
                answer += llm.detokenize([token])
                if should_stop():
                    reason = "stopped"
                    break
                # create_completion's rule, kept so that lengths match it token for token: while a
                # multi-byte character is unfinished, neither stop strings nor max_tokens are checked.
                for k, char in enumerate(answer[-3:]):
                    for num, pattern in ((2, 192), (3, 224), (4, 240)):
                        if num > 3 - k and pattern & char == pattern:
                            multibyte_fix = num - (3 - k)
                if multibyte_fix > 0:
                    multibyte_fix -= 1
                    continue
                text = _utf8_split(answer)[0].decode("utf-8", errors="ignore")
                hit = min((text.find(s) for s in stops if s in text), default=-1)
                if hit >= 0:
                    text, reason = text[:hit], "stop_string"
                    break
                end = len(text) - _stop_hold(text, stops)
                if end > sent:
                    on_text(text[sent:end])
                    sent = end
                if len(completion) >= max_new:
                    reason = "length" if max_new == sampling.max_tokens else "context_full"
                    break
        except RuntimeError as exc:  # llama_decode returned 2: aborted by the callback
            if not should_stop():
                raise InferenceError(f"llama.cpp failed while generating: {exc}", "internal") from None
            reason = "stopped"
        finally:
            gen.close()
            self._abort_during_eval(False)
            self._should_stop = lambda: False
        if reason != "stop_string":
            text = answer.decode("utf-8", errors="ignore")
        if len(text) > sent:
            on_text(text[sent:])
        t_end = time.perf_counter()
        perf = llama_cpp.llama_perf_context(llm.ctx)
        self._prompt_eval_tokens = int(perf.n_p_eval)
        n = len(completion)
        rate = (n - 1) / (t_end - t_first) if t_first is not None and n > 1 and t_end > t_first else None
        return GenerationStats(prompt_tokens=len(prompt_ids), completion_tokens=n,
                               ttft_s=None if t_first is None else t_first - t0, tokens_per_s=rate,
                               stop_reason=reason, reused_prefix_tokens=reused)

    @property
    def last_prompt_eval_tokens(self) -> int | None:
        return self._prompt_eval_tokens

    # ---------------------------------------------------------------- score

    def _score_tokens(self, request: EncodedRequest, should_stop: StopCheck) -> list[ScoreDetail]:
        """Each continuation evaluated on the context kept in the KV cache."""
        ctx_ids, conts = request
        with self._scoring(should_stop):
            return [self._score_one(ctx_ids, cont, should_stop) for cont in conts]

    def logits(self, ids: list[int]) -> np.ndarray:
        """The logits (float64) at every position of `ids` (one row per token)."""
        with self._scoring(lambda: False):
            return self._logits_for([int(i) for i in ids], first_needed=0)

    @contextlib.contextmanager
    def _scoring(self, should_stop: StopCheck) -> Iterator[Any]:
        """Evaluation that `should_stop` can abort; llama.cpp errors become InferenceErrors."""
        llm = self._require()
        self._should_stop = should_stop
        self._abort_during_eval(True)
        try:
            yield llm
        except RuntimeError as exc:
            if should_stop():
                raise InferenceError("Scoring was stopped.", "stopped") from None
            raise InferenceError(f"llama.cpp failed while scoring: {exc}", "internal") from None
        finally:
            self._abort_during_eval(False)
            self._should_stop = lambda: False
            llm._requires_eval = True

    def _score_one(self, ctx_ids: list[int], cont_ids: list[int], should_stop: StopCheck) -> ScoreDetail:
        llm = self._llm
        if not cont_ids:
            raise InferenceError("A continuation is empty after tokenization.", "bad_request")
        tokens = ctx_ids + cont_ids
        if len(tokens) > llm.n_ctx():
            raise InferenceError(f"Context and continuation need {len(tokens)} tokens; the context holds "
                                 f"{llm.n_ctx()}.", "context_full")
        if should_stop():
            raise RuntimeError("stopped")
        logits = self._logits_for(tokens[:-1], first_needed=len(ctx_ids) - 1)
        shifted = logits - logits.max(axis=1, keepdims=True)
        logprobs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        target = np.array(cont_ids)
        rows = np.arange(len(cont_ids))
        total = float(logprobs[rows, target].sum())
        greedy = bool((logprobs.argmax(axis=1) == target).all())
        return ScoreDetail(total, greedy, len(cont_ids))

    def _loglikelihood_tokens(self, requests: list[EncodedRequest], should_stop: StopCheck,
                              max_rows: int | None) -> list[list[float]]:
        """Many encoded requests (benchmarks), each prompt computed once.

        When every continuation is one token (lm-eval's " A".." D") the prompt's
        last position gives all of them: one evaluation per question. Longer ones
        are scored one after another on the prompt kept in the KV cache. A prompt
        longer than the context is cut on the left, as lm-eval does. `max_rows`
        is accepted for symmetry with the transformers backend (llama.cpp runs one
        sequence at a time).
        """
        out: list[list[float]] = []
        with self._scoring(should_stop) as llm:
            for ctx_ids, conts in requests:
                if should_stop():
                    raise RuntimeError("stopped")
                if any(not cont for cont in conts):
                    raise InferenceError("A continuation is empty after tokenization.", "bad_request")
                longest = max((len(cont) for cont in conts), default=0)
                room = llm.n_ctx() - longest + 1
                if room < 1:
                    raise InferenceError(f"A continuation of {longest} tokens does not fit the context "
                                         f"({llm.n_ctx()}).", "context_full")
                if conts and longest == 1:
                    ctx = ctx_ids[-room:]
                    row = self._logits_for(ctx, first_needed=len(ctx) - 1)[-1]
                    shifted = row - row.max()
                    logprobs = shifted - np.log(np.exp(shifted).sum())
                    out.append([float(logprobs[cont[0]]) for cont in conts])
                    continue
                scores = []
                for cont in conts:
                    ctx = ctx_ids[-(llm.n_ctx() - len(cont) + 1):]
                    logits = self._logits_for((ctx + cont)[:-1], first_needed=len(ctx) - 1)
                    shifted = logits - logits.max(axis=1, keepdims=True)
                    logprobs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
                    scores.append(float(logprobs[np.arange(len(cont)), np.array(cont)].sum()))
                out.append(scores)
            return out

    def _logits_for(self, tokens: list[int], first_needed: int) -> np.ndarray:
        """Logits (float64) at positions first_needed.. of `tokens`, reusing the cached prefix."""
        llm = self._llm
        keep = 0
        for a, b in zip(llm._input_ids[: llm.n_tokens].tolist(), tokens[:first_needed]):
            if a != b:
                break
            keep += 1
        llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        llm.n_tokens = keep
        rows: list[np.ndarray] = []
        n_vocab = llm.n_vocab()
        for start in range(keep, len(tokens), llm.n_batch):
            chunk = tokens[start:start + llm.n_batch]
            want = start + len(chunk) > first_needed
            llm._batch.set_batch(batch=chunk, n_past=start, logits_all=want)
            llm._ctx.decode(llm._batch)
            llm.input_ids[start:start + len(chunk)] = chunk
            llm.n_tokens = start + len(chunk)
            if want:
                out = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk), n_vocab))
                lo = max(0, first_needed - start)
                rows.append(out[lo:].astype(np.float64))
        return np.concatenate(rows, axis=0)

    # ---------------------------------------------------------------- unload

    def unload(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

