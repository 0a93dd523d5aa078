"""core.payloads: one decoder for every result kind, tolerant like core.events, exact on the wire."""

from __future__ import annotations

import json

import pytest

from medalpaca_desktop.core.events import Done, Result, parse_line
from medalpaca_desktop.core.payloads import (
    PAYLOAD_CLASSES,
    Generated,
    GeneratedAnswer,
    Indexed,
    IndexedFile,
    Item,
    Loaded,
    OptionScores,
    Prompt,
    Score,
    Sources,
    Unloaded,
    parse_payload,
)

GENERATE_ITEM = {"kind": "item", "id": "q1", "step": "step1", "question": "Q?", "options": {"A": "a", "B": "b"},
                 "gold": "A", "pred": None, "correct": False, "output": "I am not sure", "pred_paper": None,
                 "pred_lenient": None, "seed": 42, "latency_s": 0.25, "tokens": 5, "stop_reason": "eos"}
TOO_LONG_ITEM = {"kind": "item", "id": "q2", "step": "step2", "question": "Q?", "options": {"A": "a"}, "gold": "A",
                 "pred": None, "correct": False, "output": "", "pred_paper": None, "pred_lenient": None, "seed": 43,
                 "error": "the prompt has 900 tokens; the model's context holds 512", "latency_s": 0.01}
LOGLIKELIHOOD_ITEM = {"kind": "item", "id": "q3", "step": "step1", "question": "Q?", "options": {"A": "a", "B": "bb"},
                      "gold": "B", "pred": "A", "correct": False, "output": "", "scores": {"A": -1.0, "B": -1.5},
                      "scores_norm": {"A": -1.0, "B": -0.75}, "pred_norm": "B", "correct_norm": True,
                      "latency_s": 0.1}


def test_every_kind_round_trips_through_a_result_line():
    payloads = [
        Loaded(request_id="r1", path="/m/x.gguf", backend="llamacpp", device="cpu", context_length=256,
               notes=["no GPU"], load_s=0.5, chat_fallback="chatml"),
        Unloaded(request_id="r2"),
        Prompt(request_id="r3", text="<|user|>hi", tokens=4, template="chat", context_length=256, add_special=True),
        Score(request_id="r4", logprobs=[-1.0, -2.0], is_greedy=[True, False], tokens=[1, 2]),
        Generated(request_id="r5", text="Metformin.", prompt_tokens=40, completion_tokens=3, ttft_s=0.2,
                  tokens_per_s=31.5, stop_reason="eos", reused_prefix_tokens=12, prompt_eval_tokens=28,
                  dropped_messages=0),
        Item(id="q1", step="step1", question="Q?", options={"A": "a"}, gold="A", pred="A", correct=True,
             generated=GeneratedAnswer(pred_paper="A", pred_lenient="A", seed=1, tokens=3, stop_reason="eos")),
        Sources(request_id="r6", collections=["Clinic"], query="INR?", mode="bm25",
                sources=[{"n": 1, "chunk_id": 7, "path": "/d/a.pdf", "page": 2, "section": None, "start": 0, "end": 5,
                          "text": "INR 3", "collection": "Clinic"}]),
        IndexedFile(collection="Clinic", path="/d/b.pdf", status="failed", error="is password-protected"),
        Indexed(collection="Clinic", indexed=3, unchanged=1, failed=1, pages=12, chunks=30, seconds=0.5),
    ]
    assert {type(p) for p in payloads} == set(PAYLOAD_CLASSES.values())
    for payload in payloads:
        event = parse_line(payload.to_result().to_json())
        assert isinstance(event, Result) and event.data["kind"] == payload.kind
        assert parse_payload(event.data) == payload
        if hasattr(payload, "request_id"):
            assert event.data["request_id"] == payload.request_id


def test_unknown_keys_are_kept_and_unknown_kinds_ignored():
    prompt = parse_payload({"kind": "prompt", "request_id": "r", "text": "t", "from_a_newer_host": 1})
    assert isinstance(prompt, Prompt) and prompt.text == "t" and prompt.extra == {"from_a_newer_host": 1}
    assert prompt.to_data()["from_a_newer_host"] == 1
    assert parse_payload({"kind": "prompt"}) == Prompt()  # missing keys take their defaults
    assert parse_payload({"kind": "something new", "x": 1}) is None
    assert parse_payload({"text": "no kind"}) is None
    assert parse_payload(["not", "a", "dict"]) is None


def test_a_generation_travels_as_the_data_of_its_done_event():
    done = Generated(request_id="r", text="B", completion_tokens=1, stop_reason="length").to_done(ok=True)
    event = parse_line(done.to_json())
    assert isinstance(event, Done) and event.ok
    parsed = parse_payload(event.data)
    assert isinstance(parsed, Generated) and parsed.text == "B" and parsed.request_id == "r"
    assert parsed.stats() == {"completion_tokens": 1, "stop_reason": "length"}  # what a chat message keeps
    stopped = Generated(request_id="r", stop_reason="stopped").to_done(ok=False, stopped=True)
    assert stopped.data == {"kind": "generated", "request_id": "r", "stop_reason": "stopped"}


def test_optional_fields_stay_off_the_wire():
    score = Score(request_id="r", logprobs=[-1.0])
    assert score.to_data() == {"kind": "score", "request_id": "r", "logprobs": [-1.0]}
    assert "chat_fallback" not in Loaded(path="/m").to_data()
    assert Loaded(path="/m", backend="llamacpp", quantization="Q4_1", device="cpu", context_length=4096,
                  chat_fallback="chatml").summary() == (
        "llama.cpp · Q4_1 · cpu · 4,096-token context · no chat template: chatml format used")


@pytest.mark.parametrize("row", [GENERATE_ITEM, TOO_LONG_ITEM, LOGLIKELIHOOD_ITEM], ids=["generate", "too-long", "ll"])
def test_items_keep_exactly_the_keys_their_mode_writes(row):
    item = parse_payload(json.loads(json.dumps(row)))
    assert isinstance(item, Item) and not item.extra
    assert (item.generated is not None) == ("seed" in row) and (item.option_scores is not None) == ("scores" in row)
    assert item.to_data() == row


def test_item_parts_are_typed():
    item = parse_payload(LOGLIKELIHOOD_ITEM)
    assert isinstance(item, Item) and item.generated is None
    assert item.option_scores == OptionScores(scores={"A": -1.0, "B": -1.5}, scores_norm={"A": -1.0, "B": -0.75},
                                              pred_norm="B", correct_norm=True)
    generated = parse_payload(GENERATE_ITEM)
    assert isinstance(generated, Item) and generated.generated.seed == 42 and generated.generated.pred_paper is None
