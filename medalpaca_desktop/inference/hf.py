"""The transformers backend: HF model folders, bitsandbytes 8/4-bit, peft LoRA adapters.

Generation goes through the library's own `generate()` (the same logits
processors, so greedy output equals `model.generate`; sampling draws each row
from its own seeded generator, see hf_sampling), with a stopping criterion that
streams text piece by piece and ends the answer right after the token during
which a stop was requested or a stop string appeared. `generate_batch` answers
a benchmark's prompts with continuous batching (hf_refill) or, for caches that
cannot be joined, in left-padded `generate()` calls (hf_batch). The
conversation's KV cache is kept between calls and cropped to the common prefix
of the next prompt (hf_cache), and a long uncached prompt is evaluated in
chunks so that a stop request interrupts prompt evaluation too.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

from medalpaca_desktop.core import hf_meta
from medalpaca_desktop.core.chat_protocol import LoadSpec, SamplingSettings, StopReason
from medalpaca_desktop.inference import hf_load
from medalpaca_desktop.inference.base import (
    AnswerCallback,
    Backend,
    EncodedRequest,
    Generation,
    GenerationStats,
    InferenceError,
    LoadedModel,
    ProgressCallback,
    ScoreDetail,
    StopCheck,
    TokenCallback,
)
from medalpaca_desktop.inference.hf_cache import PromptCache, cache_argument
from medalpaca_desktop.inference.hf_model import load_causal_lm
from medalpaca_desktop.inference.hf_score import leading_special_ids, score_continuations, score_requests

DEFAULT_CONTEXT = 2048  # when neither config nor tokenizer says
# Prompt evaluation runs in chunks so a stop request lands between two of them. The chunk
# size adapts so one chunk takes about PREFILL_STEP_S: short enough for a stop within half
# a second. The price is a per-chunk cost that grows with the cache (DynamicCache copies it
# on every append): on a 135M model on 2 CPU cores a 2.8k-token uncached prompt takes
# 5.1 s in one pass, 6.6 s in 128-token chunks, 5.4 s in 512-token ones (1.2 s per chunk).
# Only uncached tokens pay it: a follow-up turn evaluates just its new tokens.
PREFILL_CHUNK_CPU = 128  # first guesses, before any chunk has been timed
PREFILL_CHUNK_GPU = 1024
PREFILL_CHUNK_MIN, PREFILL_CHUNK_MAX = 16, 8192
PREFILL_STEP_S = 0.3


class _OnceFilter(logging.Filter):
    """bitsandbytes logs "inputs will be cast ..." on every 8-bit matmul; once is enough."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def _quiet_libraries() -> None:
    """Progress arrives through our callback; the libraries' own bars and chatter stay off."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OnceFilter) for f in bnb_logger.filters):
        bnb_logger.addFilter(_OnceFilter())


def _weight_notes(loading_info: dict[str, Any]) -> list[str]:
    """Say so when weights were missing or did not fit: such a model answers nonsense."""
    notes = []
    missing = sorted(loading_info.get("missing_keys") or [])
    mismatched = sorted(str(k) for k in loading_info.get("mismatched_keys") or [])
    if missing:
        notes.append(f"{len(missing)} weights are missing from the checkpoint and were initialised randomly "
                     f"(e.g. {missing[0]}): answers will be meaningless.")
    if mismatched:
        notes.append(f"{len(mismatched)} weights have the wrong shape (e.g. {mismatched[0]}).")
    return notes


def _input_device(model: Any) -> str:
    """The device of the input embedding of a model spread over several GPUs (accelerate's hf_device_map)."""
    return str(model.get_input_embeddings().weight.device)


class HFBackend(Backend):
    """The backend interface over transformers (see base.Backend)."""

    name = "hf"
    batches = True

    def __init__(self) -> None:
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._context_length = DEFAULT_CONTEXT
        self._prefill_chunk = PREFILL_CHUNK_CPU
        self._eos_ids: set[int] = set()
        self._prompt_cache: PromptCache | None = None
        self._lead_ids: list[int] = []  # what the tokenizer puts before any text (BOS)
        self._refills: bool | None = None  # hf_refill.supports_refill for the loaded model, asked once

    # ------------------------------------------------------------------ load

    def load(self, spec: LoadSpec, progress: ProgressCallback) -> LoadedModel:
        """Check, then load tokenizer, weights and adapter; errors are InferenceErrors with a kind."""
        self.unload()
        progress("Checking the model folder", 0.0)
        folder, config = hf_load.check_model_folder(spec)
        adapter = hf_load.check_adapter_folder(spec)
        placement = hf_load.choose_placement(spec.device)
        placement = hf_load.check_memory(folder, config, spec, placement)
        spread = placement.device == hf_load.SPREAD
        try:
            import torch  # here, so that a broken install is reported like any load failure
            from transformers import AutoTokenizer
            from transformers.utils import logging as hf_logging

            _quiet_libraries()
            if spec.n_threads and placement.device == "cpu":
                torch.set_num_threads(int(spec.n_threads))
            progress("Loading the tokenizer", 0.05)
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False,
                                                      local_files_only=True)
            quantized = spec.load_in not in ("none", "", None)
            progress("Loading the weights" + (f" ({spec.load_in})" if quantized else ""), 0.1)

            def report(fraction: float) -> None:
                progress("Loading the weights", 0.1 + 0.75 * fraction)

            previous = hf_logging.set_tqdm_hook(lambda _factory, args, kwargs: hf_load.WeightProgress(
                report, *args, **kwargs))
            try:
                loaded = load_causal_lm(folder, dtype=placement.torch_dtype, device=placement.device,
                                        load_in=spec.load_in, adapter=adapter, allow_pickle=spec.allow_pickle,
                                        max_memory=hf_load.spread_max_memory(hf_load.gpu_free_list()) if spread
                                        else None)
            finally:
                hf_logging.set_tqdm_hook(previous)
            model = loaded.model
            trained_template = hf_load.adapter_chat_template(adapter) if adapter is not None else None
            if trained_template:  # a fine-tune answers in the format it was trained on, not the base's
                tokenizer.chat_template = trained_template
            model.eval()
        except Exception as exc:
            raise hf_load.load_error(exc, folder, spec) from exc
        self._adopt(model, tokenizer, _input_device(model) if spread else placement.device, config)
        notes = list(placement.notes) + _weight_notes(loaded.loading_info)
        progress("Ready", 1.0)
        return LoadedModel(
            backend=self.name, path=str(folder), device=f"{self._device} (spread over GPUs)" if spread
            else placement.device, context_length=self._context_length,
            quantization={"8bit": "bitsandbytes 8-bit", "4bit": "bitsandbytes 4-bit (nf4)"}.get(spec.load_in)
            or hf_meta.quantization_method(config),
            dtype=placement.dtype_name, adapter=str(adapter) if adapter else None,
            chat_template=getattr(tokenizer, "chat_template", None) or None,
            bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, notes=notes)

    def attach(self, model: Any, tokenizer: Any) -> None:
        """Score and generate with a model already in memory (the trainer's, mid-training), without a reload.

        The model stays the caller's: `unload` only lets go of it, and its train/eval mode is the caller's too.
        """
        self.unload()
        base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
        self._adopt(model, tokenizer, _input_device(model), base.config.to_dict())

    def _adopt(self, model: Any, tokenizer: Any, device: str, config: dict[str, Any]) -> None:
        """What the backend keeps of a loaded model; `device` is where its inputs go (the embedding's)."""
        self._model, self._tokenizer = model, tokenizer
        self._device = device
        self._prefill_chunk = PREFILL_CHUNK_GPU if self._device.startswith("cuda") else PREFILL_CHUNK_CPU
        self._context_length = self._find_context_length(config, tokenizer)
        self._eos_ids = self._find_eos_ids(model, tokenizer)
        self._prompt_cache = PromptCache(self._base_model().config)
        self._lead_ids = leading_special_ids(tokenizer)

    def _base_model(self) -> Any:
        """The transformers model under a peft wrapper (or the model itself)."""
        get_base = getattr(self._model, "get_base_model", None)
        return get_base() if callable(get_base) else self._model

    @staticmethod
    def _find_context_length(config: dict[str, Any], tokenizer: Any) -> int:
        length = hf_meta.context_length(config)
        if length:
            return length
        limit = getattr(tokenizer, "model_max_length", None)
        return int(limit) if isinstance(limit, int) and 0 < limit < 10**7 else DEFAULT_CONTEXT

    def _find_eos_ids(self, model: Any, tokenizer: Any) -> set[int]:
        eos = getattr(model.generation_config, "eos_token_id", None)
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        return {int(i) for i in ids}

    def unload(self) -> None:
        if self._model is None:
            return
        self._model = self._tokenizer = self._prompt_cache = None
        self._refills = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------ tokens

    def _require(self) -> None:
        if self._model is None:
            raise InferenceError("No model is loaded.", "not_loaded")

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        self._require()
        return list(self._tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def detokenize(self, ids: list[int]) -> str:
        """The exact text of `ids`, special tokens included (what the model received)."""
        self._require()
        return str(self._tokenizer.decode(ids, skip_special_tokens=False))

    @property
    def context_length(self) -> int:
        return self._context_length

    # ------------------------------------------------------------------ generate

    def generate(self, prompt_ids: list[int], sampling: SamplingSettings, on_text: TokenCallback,
                 should_stop: StopCheck) -> GenerationStats:
        """Stream the answer to `prompt_ids`; returns counts, timings and why it ended."""
        self._require()
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from medalpaca_desktop.inference.hf_sampling import SeededSampler
        from medalpaca_desktop.inference.hf_stream import TokenSink

        started = time.perf_counter()
        prompt_ids = [int(i) for i in prompt_ids]
        if not prompt_ids:
            raise InferenceError("The prompt is empty.", "bad_request")
        room = self._context_length - len(prompt_ids)
        if room <= 0:
            return GenerationStats(len(prompt_ids), 0, None, None, "context_full")
        max_new = min(sampling.max_tokens, room)
        cache = self._prompt_cache
        assert cache is not None
        try:
            reused = cache.prepare(prompt_ids)
            if not self._prefill(prompt_ids, should_stop):
                return GenerationStats(len(prompt_ids), 0, None, None, "stopped", reused)
            sink = TokenSink(self._tokenizer, sampling.stop, on_text, should_stop)
            input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self._device)
            with torch.inference_mode():
                out = self._model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                    **cache_argument(self._model, cache.cache), generation_config=self._generation_config(max_new),
                    logits_processor=LogitsProcessorList([SeededSampler([sampling], self._device)]),
                    stopping_criteria=StoppingCriteriaList([sink]), return_dict_in_generate=True)
            cache.record(out.sequences[0].tolist())
            sink.finish()
        except InferenceError:
            cache.reset()
            raise
        except Exception as exc:
            cache.reset()
            if hf_load.is_oom(exc):
                raise hf_load.oom_error("generating (a shorter conversation also helps)") from exc
            raise InferenceError(f"Generation failed ({type(exc).__name__}): {exc}", "internal") from exc
        tokens = sink.token_ids
        reason: StopReason
        if sink.stop_string_hit:
            reason = "stop_string"
        elif sink.user_stopped:
            reason = "stopped"
        elif tokens and tokens[-1] in self._eos_ids:
            reason = "eos"
        elif len(tokens) >= max_new and max_new < sampling.max_tokens:
            reason = "context_full"
        else:
            reason = "length"
        first, last = sink.first_token_at, sink.last_token_at
        rate = (len(tokens) - 1) / (last - first) if first and last and last > first and len(tokens) > 1 else None
        return GenerationStats(prompt_tokens=len(prompt_ids), completion_tokens=len(tokens),
                               ttft_s=(first - started) if first else None, tokens_per_s=rate,
                               stop_reason=reason, reused_prefix_tokens=reused)

    def _prefill(self, prompt_ids: list[int], should_stop: StopCheck) -> bool:
        """Evaluate a long uncached prompt chunk by chunk, checking for a stop between chunks.

        The last chunk (at most `_prefill_chunk` tokens) is left to generate() itself, so
        a short prompt is evaluated exactly as `model.generate` would. False: stopped.
        """
        import torch

        cache = self._prompt_cache
        assert cache is not None
        if should_stop():
            return False
        start = len(cache.ids)
        while start < len(prompt_ids) - self._prefill_chunk:
            stop = min(start + self._prefill_chunk, len(prompt_ids) - self._prefill_chunk)
            chunk = torch.tensor([prompt_ids[start:stop]], dtype=torch.long, device=self._device)
            began = time.perf_counter()
            with torch.inference_mode():
                self._model(input_ids=chunk, **cache_argument(self._model, cache.cache), use_cache=True,
                            logits_to_keep=1)
            self._adapt_chunk(stop - start, time.perf_counter() - began)
            cache.record(prompt_ids)
            start = stop
            if should_stop():
                return False
        return True

    def _adapt_chunk(self, size: int, seconds: float) -> None:
        """Aim the next chunk at PREFILL_STEP_S, changing by at most 4x per step."""
        if size < self._prefill_chunk // 2:  # a short remainder says little about speed
            return
        scale = min(4.0, max(0.25, PREFILL_STEP_S / max(seconds, 1e-4)))
        self._prefill_chunk = int(min(PREFILL_CHUNK_MAX, max(PREFILL_CHUNK_MIN, self._prefill_chunk * scale)))

    def _generation_config(self, max_new: int) -> Any:
        """The model's own generation config, decoding greedily over what SeededSampler leaves.

        Sampling, temperature, top-k/top-p and the repetition penalty are the
        sampler's (hf_sampling), so the model's own sampling defaults are off.
        """
        config = copy.deepcopy(self._base_model().generation_config)
        config.max_new_tokens = max_new
        config.min_new_tokens = None
        config.min_length = 0
        config.repetition_penalty = None
        config.stop_strings = None  # TokenSink / RowSink handle them (and hide them)
        config.num_beams = 1
        config.eos_token_id = sorted(self._eos_ids) or None
        if config.pad_token_id is None:
            pad = self._tokenizer.pad_token_id
            config.pad_token_id = pad if pad is not None else next(iter(sorted(self._eos_ids)), 0)
        config.do_sample = False
        config.temperature = config.top_p = config.top_k = None
        return config

    def generate_batch(self, prompts: list[list[int]], samplings: list[SamplingSettings],
                       should_stop: StopCheck, slots: int | None = None,
                       on_answer: AnswerCallback | None = None) -> list[Generation]:
        """The prompts `slots` at a time (all at once when None); the chat's KV cache is left alone.

        Where the model's cache allows (hf_refill.supports_refill) a finished row's
        slot takes the next prompt at once (hf_refill); otherwise each group of
        `slots` is one left-padded `generate()` call (hf_batch).
        """
        self._require()
        from medalpaca_desktop.inference import hf_batch, hf_refill

        if any(not ids for ids in prompts):
            raise InferenceError("A prompt is empty.", "bad_request")
        if not prompts:
            return []
        rows = [[int(i) for i in ids] for ids in prompts]
        width = max(1, slots or len(rows))
        try:
            if self._refills is None:
                self._refills = hf_refill.supports_refill(self._base_model())
            if self._refills:
                pad = self._generation_config(1).pad_token_id
                return hf_refill.generate_refilled(self._model, self._tokenizer, rows, samplings, self._context_length,
                                                   self._device, self._eos_ids, int(pad), width, should_stop,
                                                   on_answer)
            answers: list[Generation] = []
            for start in range(0, len(rows), width):
                group, group_samplings = rows[start:start + width], samplings[start:start + width]
                if should_stop():
                    done = [Generation("", GenerationStats(len(ids), 0, None, None, "stopped")) for ids in group]
                else:
                    config = self._generation_config(max(s.max_tokens for s in group_samplings))
                    done = hf_batch.generate_rows(self._model, self._tokenizer, group, group_samplings,
                                                  self._context_length, self._device, self._eos_ids, config,
                                                  should_stop)
                for offset, answer in enumerate(done):
                    if on_answer is not None:
                        on_answer(start + offset, answer)
                answers += done
            return answers
        except InferenceError:
            raise
        except Exception as exc:
            if hf_load.is_oom(exc):
                raise hf_load.oom_error("generating (a smaller batch size also helps)") from exc
            raise InferenceError(f"Generation failed ({type(exc).__name__}): {exc}", "internal") from exc

    # ------------------------------------------------------------------ score

    def tok_encode(self, text: str) -> list[int]:
        """The tokenizer's leading specials (BOS), then the text without any trailing special (EOS)."""
        self._require()
        return self._lead_ids + list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def prefix_token_id(self) -> int | None:
        self._require()
        tok = self._tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def _score_tokens(self, request: EncodedRequest, should_stop: StopCheck) -> list[ScoreDetail]:
        """Each continuation after the context, grouped into padded batches (see hf_score)."""
        self._require()
        with self._scoring_errors("scoring"):
            return score_continuations(self._model, self._tokenizer, request, self._context_length, self._device,
                                       should_stop)

    def _loglikelihood_tokens(self, requests: list[EncodedRequest], should_stop: StopCheck,
                              max_rows: int | None) -> list[list[float]]:
        """Each prompt computed once, questions batched by length (see hf_score.score_requests);
        `max_rows` caps the questions per forward pass."""
        self._require()
        with self._scoring_errors("scoring (a smaller batch size also helps)"):
            return score_requests(self._model, self._tokenizer, requests, self._context_length, self._device,
                                  should_stop, **({"max_rows": max_rows} if max_rows else {}))

    @staticmethod
    @contextlib.contextmanager
    def _scoring_errors(what: str) -> Iterator[None]:
        """Out of memory and library errors while scoring become InferenceErrors."""
        try:
            yield
        except InferenceError:
            raise
        except Exception as exc:
            if hf_load.is_oom(exc):
                raise hf_load.oom_error(what) from exc
            raise InferenceError(f"Scoring failed ({type(exc).__name__}): {exc}", "internal") from exc
