"""What the chat host costs over calling the library directly, measured side by side.

    .venv/bin/python -m perf.chat_overhead [--backend llamacpp|hf|both] [--runs 3]

Same model, prompt and settings on both sides, runs alternated so drift hits both:
- generation tokens/s (host vs llama-cpp-python `create_completion` / transformers `generate`);
- time to first token of a first turn, and of a follow-up turn after a long history
  (the follow-up must reuse the conversation's KV cache: target <= 1.2x the first turn's);
- stop latency during prompt evaluation and during generation (target <= 0.5 s).
Targets from the chat issue: >= 0.97x direct tokens/s, <= 30 ms extra time to first token.
The model is the bundled demo (SmolLM2-135M-Instruct Q4_1 GGUF) and its de-quantized HF copy.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medalpaca_desktop.core import paths
from medalpaca_desktop.core.chat_protocol import (
    ChatMessage,
    GenerateRequest,
    LoadRequest,
    LoadSpec,
    SamplingSettings,
    StopRequest,
)
from medalpaca_desktop.core.demo_model import demo_model_path
from medalpaca_desktop.core.events import parse_line

PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\nExplain how beta blockers lower blood pressure and name two "
          "common side effects.\n\n### Response:\n")
MAX_TOKENS = 96
THREADS = os.cpu_count() or 2


class HostClient:
    """The host as the GUI runs it: a subprocess spoken to in JSON lines."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "medalpaca_desktop.inference.host"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.events: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = parse_line(line)
            if event is not None:
                self.events.put((time.perf_counter(), event))

    def send(self, request: Any) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(request.to_json() + "\n")
        self.proc.stdin.flush()
        return time.perf_counter()

    def wait_for(self, predicate: Any, timeout: float = 600) -> tuple[float, Any]:
        deadline = time.monotonic() + timeout
        while True:
            at, event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            if event.type == "error":
                raise RuntimeError(f"host error: {event.message}")
            if predicate(event):
                return at, event

    def load(self, spec: LoadSpec) -> None:
        self.send(LoadRequest(spec=spec))
        self.wait_for(lambda e: e.type == "result" and e.data.get("kind") == "loaded")

    def generate(self, req: GenerateRequest, stop_after: float | None = None) -> dict[str, Any]:
        """Client-side timings: time to first token event, tokens/s, time from stop to done."""
        sent = self.send(req)
        first = None
        tokens = 0
        stop_sent = None
        while True:
            timeout = None
            if stop_after is not None and stop_sent is None:
                timeout = max(0.0, sent + stop_after - time.perf_counter())
            try:
                at, event = self.events.get(timeout=timeout if timeout is not None else 600)
            except queue.Empty:
                stop_sent = self.send(StopRequest(target=req.id))
                continue
            if event.type == "token" and event.request_id == req.id:
                tokens += 1
                first = first or at
            elif event.type == "done" and event.data.get("request_id") == req.id:
                end = at
                data = dict(event.data)
                break
            elif event.type == "error":
                raise RuntimeError(event.message)
        data.update(client_ttft_s=(first - sent) if first else None,
                    client_tokens_per_s=(data["completion_tokens"] - 1) / (end - first)
                    if first and data["completion_tokens"] > 1 and end > first else None,
                    stop_latency_s=(end - stop_sent) if stop_sent else None)
        return data

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --------------------------------------------------------------------------- direct library calls


def direct_llamacpp(llm: Any, prompt: str) -> dict[str, float]:
    start = time.perf_counter()
    first = None
    n = 0
    llm.reset()
    for chunk in llm.create_completion(prompt, max_tokens=MAX_TOKENS, temperature=0.0, repeat_penalty=1.0,
                                       stream=True):
        if chunk["choices"][0]["text"]:
            n += 1
            first = first or time.perf_counter()
    end = time.perf_counter()
    return {"ttft_s": first - start, "tokens_per_s": (n - 1) / (end - first), "tokens": n}


def direct_hf(model: Any, tok: Any, prompt: str) -> dict[str, float]:
    import torch
    from transformers import TextIteratorStreamer

    inputs = tok(prompt, return_tensors="pt")
    streamer = TextIteratorStreamer(tok, skip_prompt=True)
    start = time.perf_counter()
    thread = threading.Thread(target=model.generate, kwargs=dict(**inputs, max_new_tokens=MAX_TOKENS,
                                                                  do_sample=False, streamer=streamer))
    with torch.no_grad():
        thread.start()
        first = None
        n = 0
        for piece in streamer:
            if piece:
                n += 1
                first = first or time.perf_counter()
        thread.join()
    end = time.perf_counter()
    return {"ttft_s": first - start, "tokens_per_s": (n - 1) / (end - first), "tokens": n}


# --------------------------------------------------------------------------- scenarios


@dataclass
class Row:
    measure: str
    host: float
    reference: float
    target: str

    def line(self) -> str:
        ratio = self.host / self.reference if self.reference else float("nan")
        return f"| {self.measure} | {self.host:.4f} | {self.reference:.4f} | {ratio:.3f} | {self.target} |"


def long_history(turns: int) -> list[ChatMessage]:
    msgs: list[ChatMessage] = []
    for i in range(turns):
        msgs.append(ChatMessage("user", f"Question {i}: what is the normal range of serum sodium, and what "
                                        f"are the symptoms of hyponatraemia in an older adult?"))
        msgs.append(ChatMessage("assistant", "Serum sodium is normally 135 to 145 mmol/L. Hyponatraemia can "
                                             "cause nausea, headache, confusion, falls and, when severe, seizures. "
                                             * 2))
    return msgs


def bench_backend(backend: str, runs: int) -> list[Row]:
    if backend == "llamacpp":
        model = str(demo_model_path())
        spec = LoadSpec(model=model, backend="llamacpp", n_ctx=4096, n_threads=THREADS)
        from llama_cpp import Llama

        ref_model = Llama(model, n_ctx=4096, n_threads=THREADS, verbose=False)
        direct = functools.partial(direct_llamacpp, ref_model)
    else:
        from trainer.gguf_import import dequantize_gguf_to_hf

        hf_dir = paths.cache_dir() / "perf-demo-hf"
        if not (hf_dir / "config.json").exists():
            dequantize_gguf_to_hf(demo_model_path(), hf_dir)
        spec = LoadSpec(model=str(hf_dir), backend="hf", device="cpu")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(THREADS)
        tok = AutoTokenizer.from_pretrained(hf_dir)
        ref_model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
        direct = functools.partial(direct_hf, ref_model, tok)

    host = HostClient()
    try:
        host.load(spec)
        greedy = SamplingSettings(temperature=0.0, max_tokens=MAX_TOKENS, repeat_penalty=1.0)
        host_rows, ref_rows = [], []
        direct("Warm-up. " + PROMPT)  # warm-up both sides
        host.generate(GenerateRequest(template="raw", prompt="Warm-up. " + PROMPT, sampling=greedy))
        for i in range(runs):  # alternate; a distinct first word per run so no side reuses a cached prompt
            host_rows.append(host.generate(GenerateRequest(template="raw", prompt=f"Case {i}a. " + PROMPT,
                                                           sampling=greedy)))
            ref_rows.append(direct(f"Case {i}b. " + PROMPT))
        host_tps = statistics.median(r["client_tokens_per_s"] for r in host_rows)
        ref_tps = statistics.median(r["tokens_per_s"] for r in ref_rows)
        host_ttft = statistics.median(r["client_ttft_s"] for r in host_rows)
        ref_ttft = statistics.median(r["ttft_s"] for r in ref_rows)

        # First turn vs follow-up after a long history, in one conversation (cache reuse).
        short = SamplingSettings(temperature=0.0, max_tokens=8, repeat_penalty=1.0)
        history = long_history(12 if backend == "llamacpp" else 6)
        firsts, follows = [], []
        for i in range(runs):
            conv = f"perf-{backend}-{i}"
            first_turn = [ChatMessage("user", f"Run {i}. What is the first-line drug for type 2 diabetes?")]
            firsts.append(host.generate(GenerateRequest(messages=first_turn, template="chat", sampling=short,
                                                        conversation_id=conv))["client_ttft_s"])
            conv2 = f"perf-{backend}-long-{i}"
            msgs = [ChatMessage("user", f"Run {i}.")] + history
            done = host.generate(GenerateRequest(messages=msgs + [ChatMessage("user", "Thanks. And potassium?")],
                                                 template="chat", sampling=short, conversation_id=conv2))
            msgs = msgs + [ChatMessage("user", "Thanks. And potassium?"), ChatMessage("assistant", done["text"]),
                           ChatMessage("user", "And calcium?")]
            follows.append(host.generate(GenerateRequest(messages=msgs, template="chat", sampling=short,
                                                         conversation_id=conv2))["client_ttft_s"])

        # Stop latency: during prompt evaluation (a long prompt) and during generation.
        long_prompt = PROMPT + " ".join(m.content for m in history) * (2 if backend == "llamacpp" else 1)
        stop_eval = [host.generate(GenerateRequest(template="raw", prompt=f"{i} " + long_prompt,
                                                   sampling=greedy), stop_after=0.3)["stop_latency_s"]
                     for i in range(runs)]
        stop_gen = [host.generate(GenerateRequest(template="raw", prompt=PROMPT, sampling=SamplingSettings(
            temperature=0.0, max_tokens=4000, repeat_penalty=1.0)), stop_after=1.5)["stop_latency_s"]
            for _ in range(runs)]
    finally:
        host.close()
    return [
        Row(f"{backend}: generation tokens/s", host_tps, ref_tps, ">= 0.97x"),
        Row(f"{backend}: time to first token, s (host vs direct)", host_ttft, ref_ttft, "<= +0.030 s"),
        Row(f"{backend}: follow-up TTFT after long history vs first turn, s", statistics.median(follows),
            statistics.median(firsts), "<= 1.2x"),
        Row(f"{backend}: stop latency during prompt eval, s", statistics.median(stop_eval), 0.5, "<= 0.5 s"),
        Row(f"{backend}: stop latency during generation, s", statistics.median(stop_gen), 0.5, "<= 0.5 s"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("llamacpp", "hf", "both"), default="both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows: list[Row] = []
    for backend in (("llamacpp", "hf") if args.backend == "both" else (args.backend,)):
        rows += bench_backend(backend, args.runs)
    print(f"threads={THREADS}, max_tokens={MAX_TOKENS}, runs={args.runs} (medians)\n")
    print("| measure | host | reference | ratio | target |\n|---|---|---|---|---|")
    for row in rows:
        print(row.line())
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
