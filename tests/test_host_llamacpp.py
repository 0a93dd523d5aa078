"""The chat host as the GUI runs it: a real subprocess, JSON lines in, events out, GGUF models.

Mechanics on the tiny GGUF; stop latency, KV reuse and scoring sense on the demo model.
"""

from __future__ import annotations

import json
import math
import queue
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from medalpaca_desktop.core.chat_protocol import (
    ChatMessage,
    GenerateRequest,
    LoadRequest,
    LoadSpec,
    SamplingSettings,
    ScoreRequest,
    StopRequest,
    UnloadRequest,
)
from medalpaca_desktop.core.events import Done, Error, Event, Result, Started, Token
from medalpaca_desktop.inference.chat_cli import HostProcess

TIMEOUT = 60.0


class Host:
    """Drive a real host process and wait for the events that answer a request."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        import os

        saved = dict(os.environ)
        os.environ.update(env or {})
        try:
            self.proc = HostProcess()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.seen: list[Event] = []

    def next(self, timeout: float = TIMEOUT) -> Event:
        while True:
            line, event = self.proc.events.get(timeout=timeout)
            assert line is not None, f"host ended: {list(self.proc.stderr_tail)}"
            if event is not None:
                self.seen.append(event)
                return event

    def send(self, request) -> str:
        self.proc.send(request)
        return request.id

    def send_raw(self, text: str) -> None:
        assert self.proc.proc.stdin is not None
        self.proc.proc.stdin.write(text.encode() + b"\n")
        self.proc.proc.stdin.flush()

    def until(self, pred, timeout: float = TIMEOUT) -> list[Event]:
        """Events up to and including the first one `pred` accepts."""
        got: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.1, deadline - time.monotonic()))
            got.append(event)
            if pred(event):
                return got

    def load(self, path: Path, **spec: Any) -> Event:
        rid = self.send(LoadRequest(spec=LoadSpec(model=str(path), **spec)))
        return self.until(lambda e: _rid(e) == rid and isinstance(e, (Result, Error)))[-1]

    def generate(self, **kwargs: Any) -> tuple[dict[str, Any], str, Done | Error, list[Event]]:
        """(prompt result data, streamed text, done event, all events) of one generate request."""
        rid = self.send(GenerateRequest(**kwargs))
        events = self.until(lambda e: _rid(e) == rid and isinstance(e, Done))
        prompt = next((e.data for e in events if isinstance(e, Result) and e.data.get("kind") == "prompt"), {})
        text = "".join(e.text for e in events if isinstance(e, Token) and e.request_id == rid)
        return prompt, text, events[-1], events

    def close(self) -> int:
        self.proc.close()
        return self.proc.proc.returncode


def _rid(event: Event) -> str | None:
    if isinstance(event, Token):
        return event.request_id
    if isinstance(event, (Result, Done)):
        return event.data.get("request_id")
    return event.extra.get("request_id")


def greedy(**kw: Any) -> SamplingSettings:
    return SamplingSettings(temperature=0.0, **kw)


@pytest.fixture()
def host():
    h = Host()
    assert isinstance(h.next(), Started)
    yield h
    h.close()


# ------------------------------------------------------------------ failures keep the host usable


def _write_unsupported_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "nosucharch")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_every_failure_is_one_error_and_the_host_stays_usable(host, tiny_gguf, tmp_path):
    host.send_raw("{not json")
    e = host.next()
    assert isinstance(e, Error) and e.kind == "bad_request"
    host.send_raw(json.dumps({"type": "dance"}))
    assert host.next().kind == "bad_request"  # type: ignore[attr-defined]

    _p, _t, done, events = host.generate(messages=[ChatMessage("user", "hi")])
    errors = [e for e in events if isinstance(e, Error)]
    assert [e.kind for e in errors] == ["not_loaded"] and done.ok is False

    assert host.load(tmp_path / "missing.gguf").kind == "not_found"  # type: ignore[attr-defined]
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    assert host.load(garbage).kind == "corrupt"  # type: ignore[attr-defined]
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    err = host.load(truncated)
    assert err.kind == "corrupt" and "truncated" in err.message  # type: ignore[attr-defined]
    err = host.load(_write_unsupported_gguf(tmp_path / "odd.gguf"))
    assert isinstance(err, Error) and err.kind == "unsupported", err
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    assert host.load(pickled).kind == "pickle_refused"  # type: ignore[attr-defined]

    loaded = host.load(tiny_gguf)
    assert isinstance(loaded, Result) and loaded.data["kind"] == "loaded", loaded
    _p, text, done, _e = host.generate(template="raw", prompt="The patient", sampling=greedy(max_tokens=8))
    assert done.ok and done.data["completion_tokens"] > 0 and text
    assert host.close() == 0


def test_too_big_for_memory_is_refused_with_advice(tiny_gguf):
    h = Host(env={"MEDALPACA_MEMORY_LIMIT_MB": "1"})
    try:
        assert isinstance(h.next(), Started)
        err = h.load(tiny_gguf)
        assert isinstance(err, Error) and err.kind == "too_large"
        assert "smaller quantization" in err.message and "context" in err.message
    finally:
        h.close()


# ------------------------------------------------------------------ streaming, prompt, context


def test_load_stream_prompt_and_done(host, tiny_gguf):
    loaded = host.load(tiny_gguf)
    data = loaded.data  # type: ignore[attr-defined]
    assert data["backend"] == "llamacpp" and data["device"] == "cpu" and data["context_length"] == 256
    assert data["chat_template"] and data["load_s"] >= 0
    assert any(isinstance(e, type(loaded)) or e.type == "progress" for e in host.seen)

    prompt, text, done, events = host.generate(messages=[ChatMessage("user", "What is a fever?")],
                                               sampling=greedy(max_tokens=12))
    assert prompt["template"] == "chat" and prompt["fallback"] is None
    assert prompt["text"] == "<|im_start|>user\nWhat is a fever?<|im_end|>\n<|im_start|>assistant\n"
    assert prompt["tokens"] == done.data["prompt_tokens"] and prompt["dropped_messages"] == 0
    tokens = [e for e in events if isinstance(e, Token)]
    assert tokens and all(t.text for t in tokens)
    assert done.ok and done.data["text"] == text and done.data["completion_tokens"] <= 12
    assert done.data["stop_reason"] in ("eos", "length") and done.data["ttft_s"] is not None


def test_long_history_drops_oldest_turns_and_says_so(host, tiny_gguf):
    host.load(tiny_gguf)  # trained context: 256 tokens
    history: list[ChatMessage] = []
    for i in range(12):
        history += [ChatMessage("user", f"Question {i} about the heart and the lungs?"),
                    ChatMessage("assistant", f"Answer {i}: the heart pumps blood through the lungs.")]
    history.append(ChatMessage("user", "And the kidneys?"))
    prompt, _text, done, _e = host.generate(messages=history, sampling=greedy(max_tokens=16))
    assert done.ok, done
    assert prompt["truncated"] and prompt["dropped_messages"] >= 2 and prompt["dropped_messages"] % 2 == 0
    assert prompt["tokens"] + 16 <= 256
    assert prompt["text"].endswith("And the kidneys?<|im_end|>\n<|im_start|>assistant\n")

    _p, _t, done, events = host.generate(messages=[ChatMessage("user", "kidney " * 400)], sampling=greedy())
    assert [e.kind for e in events if isinstance(e, Error)] == ["bad_request"] and not done.ok


def test_unload_then_generate_is_not_loaded(host, tiny_gguf):
    host.load(tiny_gguf)
    rid = host.send(UnloadRequest())
    assert host.until(lambda e: _rid(e) == rid)[-1].data["kind"] == "unloaded"  # type: ignore[attr-defined]
    _p, _t, done, events = host.generate(template="raw", prompt="x")
    assert [e.kind for e in events if isinstance(e, Error)] == ["not_loaded"]


# ------------------------------------------------------------------ stop, KV reuse, score (demo model)


def test_stop_during_prompt_evaluation_is_fast_and_model_stays_loaded(host, demo_gguf):
    assert host.load(demo_gguf, n_ctx=4096).data["kind"] == "loaded"  # type: ignore[attr-defined]
    long_prompt = "The patient presented with fever, cough and shortness of breath. " * 250  # ~3300 tokens
    rid = host.send(GenerateRequest(template="raw", prompt=long_prompt, sampling=greedy(max_tokens=4)))
    host.until(lambda e: _rid(e) == rid and isinstance(e, Result))  # the prompt is being evaluated now
    time.sleep(0.3)
    t_stop = time.monotonic()
    host.send(StopRequest(target=rid))
    done = host.until(lambda e: _rid(e) == rid and isinstance(e, Done))[-1]
    latency = time.monotonic() - t_stop
    print(f"stop latency during prompt evaluation: {latency * 1000:.1f} ms")
    assert done.stopped and not done.ok and done.data["stop_reason"] == "stopped"  # type: ignore[attr-defined]
    assert done.data["completion_tokens"] == 0  # type: ignore[attr-defined]
    assert latency < 1.5  # the bound is 0.5 s; slack for a loaded CI machine

    # Stop while generating, then the model still answers.
    rid = host.send(GenerateRequest(messages=[ChatMessage("user", "Write a long story about a hospital.")],
                                    sampling=greedy(max_tokens=400)))
    host.until(lambda e: isinstance(e, Token) and e.request_id == rid)
    host.send(StopRequest())
    done = host.until(lambda e: _rid(e) == rid and isinstance(e, Done))[-1]
    assert done.stopped and done.data["completion_tokens"] < 400  # type: ignore[attr-defined]
    _p, text, done, _e = host.generate(messages=[ChatMessage("user", "Hi")], sampling=greedy(max_tokens=8))
    assert done.ok and text


def test_follow_up_turn_reuses_the_kv_cache(host, demo_gguf):
    host.load(demo_gguf, n_ctx=4096)
    history = []
    for i, question in enumerate(["What is hypertension?", "How is it treated?", "What about in pregnancy?"]):
        history.append(ChatMessage("user", question))
        prompt, text, done, _e = host.generate(messages=list(history), sampling=greedy(max_tokens=60))
        history.append(ChatMessage("assistant", text))
        d = done.data  # type: ignore[attr-defined]
        print(f"turn {i + 1}: prompt {d['prompt_tokens']} tokens, evaluated {d['prompt_eval_tokens']}, "
              f"reused {d['reused_prefix_tokens']}, ttft {d['ttft_s'] * 1000:.0f} ms, {d['tokens_per_s']:.0f} tok/s")
        if i == 0:
            first_eval = d["prompt_eval_tokens"]
            assert first_eval == d["prompt_tokens"]
        else:
            # Only the new turn is evaluated: the answer's end, the user's message, the assistant header.
            new_tokens = d["prompt_tokens"] - d["reused_prefix_tokens"]
            assert d["prompt_eval_tokens"] == new_tokens
            assert new_tokens < 40 and d["reused_prefix_tokens"] > first_eval


def test_score_matches_llama_cpp_logits(host, tiny_gguf):
    import llama_cpp
    import numpy as np

    host.load(tiny_gguf)
    context, conts = "The patient has a", [" fever", " cough and a fever"]
    rid = host.send(ScoreRequest(context=context, continuations=conts))
    result = host.until(lambda e: _rid(e) == rid and isinstance(e, Result))[-1].data  # type: ignore[attr-defined]
    assert result["kind"] == "score" and len(result["logprobs"]) == 2 and len(result["is_greedy"]) == 2
    assert isinstance(host.until(lambda e: _rid(e) == rid and isinstance(e, Done))[-1], Done)

    ref = llama_cpp.Llama(str(tiny_gguf), n_ctx=256, logits_all=True, verbose=False)
    for cont, got, n_cont in zip(conts, result["logprobs"], result["tokens"]):
        ctx_ids = ref.tokenize(context.encode(), special=True)
        cont_ids = ref.tokenize((context + cont).encode(), special=True)[len(ctx_ids):]
        assert len(cont_ids) == n_cont
        ref.reset()
        ref.eval(ctx_ids + cont_ids[:-1])
        logits = np.asarray(ref.scores[len(ctx_ids) - 1: len(ctx_ids) + len(cont_ids) - 1], dtype=np.float64)
        logprobs = logits - logits.max(1, keepdims=True)
        logprobs -= np.log(np.exp(logprobs).sum(1, keepdims=True))
        expected = float(sum(logprobs[i, t] for i, t in enumerate(cont_ids)))
        assert math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-4), (cont, got, expected)
    ref.close()


def test_demo_model_scores_paris_as_the_capital(host, demo_gguf):
    host.load(demo_gguf, n_ctx=1024)
    rid = host.send(ScoreRequest(context="The capital of France is", continuations=[" Paris", " London", " Rome"]))
    data = host.until(lambda e: _rid(e) == rid and isinstance(e, Result))[-1].data  # type: ignore[attr-defined]
    paris, london, rome = data["logprobs"]
    assert paris > london and paris > rome and data["is_greedy"][0] is True


# ------------------------------------------------------------------ ending


def test_sigterm_ends_the_host_cleanly(host, tiny_gguf):
    host.load(tiny_gguf)
    host.proc.proc.send_signal(signal.SIGTERM)
    assert host.proc.proc.wait(timeout=15) == 0


def test_eof_ends_the_host_cleanly(host):
    with pytest.raises(queue.Empty):
        host.next(timeout=0.2)
    assert host.close() == 0
