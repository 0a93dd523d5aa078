"""`medalpaca chat`: faithful to llama-cpp-python, streams, chats interactively, fails in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medalpaca_desktop.core.events import parse_line

FLU = "What are common symptoms of the flu?"


def chat(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medalpaca_desktop.cli", "chat", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def events_of(stdout: str) -> list:
    events = [parse_line(line) for line in stdout.splitlines()]
    assert all(e is not None for e in events), stdout
    return events


def test_raw_greedy_equals_llama_cpp_create_completion(tiny_gguf):
    import llama_cpp

    prompt, n = "The patient has a fever and", 24
    ref = llama_cpp.Llama(str(tiny_gguf), n_ctx=256, verbose=False)
    expected = ref.create_completion(prompt, temperature=0, max_tokens=n, repeat_penalty=1.0)["choices"][0]["text"]
    ref.close()

    res = chat("--model", str(tiny_gguf), "--template", "raw", "--temperature", "0", "--prompt", prompt,
               "--max-tokens", str(n), "--jsonl")
    assert res.returncode == 0, res.stderr
    events = events_of(res.stdout)
    tokens = [e for e in events if e.type == "token"]
    assert tokens and all(isinstance(t.text, str) and t.text for t in tokens)
    assert "".join(t.text for t in tokens) == expected
    prompt_event = next(e for e in events if e.type == "result" and e.data["kind"] == "prompt")
    assert prompt_event.data["text"] == prompt
    assert events[-1].type == "done" and events[-1].data["text"] == expected

    plain = chat("--model", str(tiny_gguf), "--template", "raw", "--temperature", "0", "--prompt", prompt,
                 "--max-tokens", str(n))
    assert plain.returncode == 0 and plain.stdout == expected + "\n"


def test_chat_template_greedy_equals_create_chat_completion_on_demo(demo_gguf):
    import llama_cpp

    ref = llama_cpp.Llama(str(demo_gguf), n_ctx=4096, verbose=False)
    out = ref.create_chat_completion(messages=[{"role": "user", "content": FLU}], temperature=0, max_tokens=200)
    expected = out["choices"][0]["message"]["content"]
    ref.close()

    res = chat("--model", str(demo_gguf), "--template", "chat", "--temperature", "0", "--prompt", FLU,
               "--max-tokens", "200", "--jsonl")
    assert res.returncode == 0, res.stderr
    events = events_of(res.stdout)
    answer = "".join(e.text for e in events if e.type == "token")
    assert answer == expected
    done = events[-1]
    assert done.type == "done" and done.data["stop_reason"] in ("eos", "length")
    # The demo proves answers make sense: a coherent, on-topic English answer.
    assert "fever" in answer.lower() and "influenza" in answer.lower()
    print(f"demo answer ({done.data['completion_tokens']} tokens, {done.data['tokens_per_s']:.0f} tok/s, "
          f"ttft {done.data['ttft_s'] * 1000:.0f} ms): {answer}")

    # The end-of-turn token (<|im_end|>) ends a short answer: no endless answers.
    hi = chat("--model", str(demo_gguf), "--temperature", "0", "--prompt", "Hi", "--jsonl")
    done = events_of(hi.stdout)[-1]
    assert done.data["stop_reason"] == "eos" and done.data["completion_tokens"] < 40, done.data
    assert "<|im_end|>" not in done.data["text"] and done.data["text"].strip()


def test_medalpaca_template_and_system_prompt(tiny_gguf):
    res = chat("--model", str(tiny_gguf), "--template", "medalpaca", "--system", "Answer briefly.",
               "--temperature", "0", "--prompt", "What is asthma?", "--max-tokens", "8", "--jsonl")
    assert res.returncode == 0, res.stderr
    prompt = next(e for e in events_of(res.stdout) if e.type == "result" and e.data["kind"] == "prompt").data
    assert prompt["text"] == ("Answer briefly.\n\n### Instruction:\nWhat is asthma?\n\n### Input:\n\n\n"
                              "### Response:\n")


def test_interactive_chat_keeps_history_and_exits(tiny_gguf):
    res = chat("--model", str(tiny_gguf), "--temperature", "0", "--max-tokens", "6", "--jsonl",
               stdin="What is a fever?\nAnd a cough?\n/exit\nnever sent\n")
    assert res.returncode == 0, res.stderr
    prompts = [e.data["text"] for e in events_of(res.stdout) if e.type == "result" and e.data["kind"] == "prompt"]
    assert len(prompts) == 2
    assert "What is a fever?" in prompts[1] and "<|im_start|>assistant\n" in prompts[1].split("And a cough?")[0]

    eof = chat("--model", str(tiny_gguf), "--max-tokens", "4", stdin="Hello\n")  # Ctrl+D after one question
    assert eof.returncode == 0, eof.stderr


@pytest.mark.parametrize("args, needle", [
    (["--model", "/nonexistent/model.gguf", "--prompt", "hi"], "not found"),
    (["--model", "{tmp}/bad.gguf", "--prompt", "hi"], "damaged"),
    (["--model", "{tiny}", "--prompt", "hi", "--temperature", "9"], "temperature"),
])
def test_errors_are_one_line_and_exit_2(args, needle, tiny_gguf, tmp_path: Path):
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    args = [a.format(tmp=tmp_path, tiny=tiny_gguf) for a in args]
    res = chat(*args)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("medalpaca: error:")]
    assert len(lines) == 1 and needle in lines[0].lower(), res.stderr
    assert res.stdout == ""


def test_jsonl_event_lines_are_json(tiny_gguf):
    res = chat("--model", str(tiny_gguf), "--prompt", "hi", "--max-tokens", "3", "--seed", "7", "--jsonl")
    assert res.returncode == 0
    kinds = [json.loads(line)["type"] for line in res.stdout.splitlines()]
    assert kinds[0] == "started" and kinds[-1] == "done" and "progress" in kinds
