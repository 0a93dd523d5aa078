"""The backend base (lm-eval's TemplateLM rule written once) and the one LoRA merge's guard."""

from __future__ import annotations

import json
import shutil

import pytest

from medalpaca_desktop.core.chat_protocol import LoadSpec, SamplingSettings
from medalpaca_desktop.inference.base import InferenceError, create_backend

REQUESTS = [
    ("Question: which organ produces insulin?\nAnswer: ", ["pancreas", "liver", "the left kidney"]),
    ("The patient has a fever and", [" chest pain.", " a cough"]),
    ("", ["Hello there"]),
]


@pytest.fixture(scope="module")
def backends(tiny_llama_dir, tiny_gguf):
    """The same tiny model through transformers (HF folder) and llama.cpp (its f32 GGUF)."""
    hf = create_backend("hf")
    hf.load(LoadSpec(model=str(tiny_llama_dir), backend="hf", device="cpu"), lambda *_: None)
    ll = create_backend("llamacpp")
    ll.load(LoadSpec(model=str(tiny_gguf), backend="llamacpp", n_ctx=256), lambda *_: None)
    yield {"hf": hf, "llamacpp": ll}
    hf.unload()
    ll.unload()


@pytest.mark.parametrize("name", ["hf", "llamacpp"])
def test_encode_pair_moves_trailing_spaces_to_the_continuation(backends, name):
    b = backends[name]
    ctx, cont = b.encode_pair("Answer: ", "B")
    assert (ctx, cont) == b.encode_pair("Answer:", " B")  # the space travels with the continuation
    assert ctx == b.tok_encode("Answer:")
    assert ctx + cont == b.tok_encode("Answer: B")  # the continuation's ids are the whole text's after the context
    assert b.detokenize(cont) == " B"
    assert b.encode_pair("  ", "Hi") == ([b.prefix_token_id], b.tokenize("  Hi", add_special=False))


def test_backends_agree_on_loglikelihood_through_the_base(backends):
    hf, ll = backends["hf"], backends["llamacpp"]
    for context, options in REQUESTS:
        assert hf.encode_request(context, options) == ll.encode_request(context, options)
    fast = {n: b.loglikelihood(REQUESTS, lambda: False) for n, b in backends.items()}
    for row_hf, row_ll in zip(fast["hf"], fast["llamacpp"]):
        assert row_hf == pytest.approx(row_ll, rel=1e-4, abs=1e-3)  # llama.cpp keeps an f16 KV cache
    for context, options in REQUESTS:
        d_hf = hf.score_details(context, options, lambda: False)
        d_ll = ll.score_details(context, options, lambda: False)
        assert [d.tokens for d in d_hf] == [d.tokens for d in d_ll] == [len(c) for c in
                                                                       hf.encode_request(context, options)[1]]
        assert [d.logprob for d in d_hf] == pytest.approx([d.logprob for d in d_ll], rel=1e-4, abs=1e-3)
        assert [d.is_greedy for d in d_hf] == [d.is_greedy for d in d_ll]
    for (context, options), row in zip(REQUESTS, fast["hf"]):
        assert hf.score(context, options, lambda: False) == pytest.approx(row, abs=1e-4)


BATCH_PROMPTS = ["Question: which organ produces insulin?\nAnswer:", "Fever and cough for three days. The cause",
                 "A", "The first-line treatment of anaphylaxis is intramuscular"]


def _one_by_one(backend, prompts, samplings):
    """Each prompt alone through the streaming `generate` (the chat's path)."""
    out = []
    for ids, sampling in zip(prompts, samplings):
        pieces: list[str] = []
        stats = backend.generate(ids, sampling, pieces.append, lambda: False)
        out.append(("".join(pieces), stats.completion_tokens, stats.stop_reason))
    return out


@pytest.mark.parametrize("name", ["hf", "llamacpp"])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_a_batch_answers_each_prompt_as_if_it_were_alone(backends, name, temperature):
    """Different lengths (left padding), own seeds, own limits and stop strings; batch order changes nothing."""
    b = backends[name]
    prompts = [b.tokenize(p) for p in BATCH_PROMPTS]
    greedy_text = _one_by_one(b, prompts[2:3], [SamplingSettings(temperature=0, max_tokens=12)])[0][0]
    stop = greedy_text[4:6]  # in the middle of the greedy answer: a stop string that is hit
    samplings = [SamplingSettings(temperature=temperature, top_p=0.95, top_k=40, max_tokens=m, seed=100 + i,
                                  stop=stops)
                 for i, (m, stops) in enumerate([(12, []), (7, []), (12, [stop]), (9, [])])]
    batch = b.generate_batch(prompts, samplings, lambda: False)
    got = [(g.text, g.stats.completion_tokens, g.stats.stop_reason) for g in batch]
    assert got == _one_by_one(b, prompts, samplings)
    assert [g.stats.prompt_tokens for g in batch] == [len(p) for p in prompts]
    assert got[1][1] <= 7 and (got[1][2] in ("length", "eos"))
    if temperature == 0:
        assert got[2][2] == "stop_string" and got[2][0] == greedy_text[:greedy_text.find(stop)]
    assert len({text for text, _, _ in got}) == len(got)  # four different answers
    order = [3, 1, 0, 2]
    shuffled = b.generate_batch([prompts[i] for i in order], [samplings[i] for i in order], lambda: False)
    assert [(g.text, g.stats.completion_tokens) for g in shuffled] == [got[i][:2] for i in order]


def _stop_after(polls: int):
    """A stop check that says stop from its (polls + 1)-th call on."""
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > polls

    return should_stop


def test_a_stop_during_a_batch_leaves_the_unfinished_answers_stopped(backends):
    hf = backends["hf"]
    prompts = [hf.tokenize(p) for p in BATCH_PROMPTS]
    batch = hf.generate_batch(prompts, [SamplingSettings(temperature=0, max_tokens=40)] * len(prompts),
                              _stop_after(3))
    assert all(g.stats.stop_reason in ("stopped", "eos") for g in batch)
    assert any(g.stats.stop_reason == "stopped" for g in batch)
    assert all(g.stats.completion_tokens <= 4 for g in batch)
    room = hf.context_length
    full = hf.generate_batch([[1] * room, prompts[0]], [SamplingSettings(temperature=0, max_tokens=3)] * 2,
                             lambda: False)
    assert full[0].stats.stop_reason == "context_full" and full[0].text == ""
    assert full[1].stats.completion_tokens > 0


MORE_PROMPTS = BATCH_PROMPTS + ["Chest pain radiating to the left arm suggests", "Why", "A 4-year-old boy with a "
                                 "barking cough, stridor and a low-grade fever most likely has"]


def _slot_schedule(lengths: list[int], slots: int) -> list[int]:
    """The order in which continuous batching ends rows of these lengths: a pass either lets waiting
    prompts enter free slots (each takes its first token) or steps every running row by one token."""
    waiting, running, ended = list(range(len(lengths))), [], []
    left = list(lengths)
    while waiting or running:
        if len(running) < slots and waiting:
            entering = waiting[:slots - len(running)]
            waiting = waiting[len(entering):]
            running += entering
            moved = entering
        else:
            moved = running
        for i in moved:
            left[i] -= 1
        ended += [i for i in running if left[i] <= 0]
        running = [i for i in running if left[i] > 0]
    return ended


@pytest.mark.parametrize("temperature", [0.0, 0.9])
@pytest.mark.parametrize("refill", [True, False])
def test_fewer_slots_than_prompts_answer_as_alone_and_hand_each_answer_on_once(backends, temperature, refill):
    """transformers: 2 slots for 7 prompts, a freed slot taking the next prompt (hf_refill), or groups of
    2 through generate() (hf_batch, for caches that cannot be joined): the same answers either way."""
    hf = backends["hf"]
    prompts = [hf.tokenize(p) for p in MORE_PROMPTS]
    samplings = [SamplingSettings(temperature=temperature, top_p=0.9, max_tokens=m, seed=7 + i,
                                  repeat_penalty=1.1 if i == 5 else 1.0)
                 for i, m in enumerate([3, 11, 6, 9, 2, 8, 5])]
    handed: list[tuple[int, str]] = []
    hf._refills = refill
    try:
        batch = hf.generate_batch(prompts, samplings, lambda: False, slots=2,
                                  on_answer=lambda i, g: handed.append((i, g.text)))
    finally:
        hf._refills = None
    got = [(g.text, g.stats.completion_tokens, g.stats.stop_reason) for g in batch]
    assert got == _one_by_one(hf, prompts, samplings)
    assert sorted(handed) == [(i, g.text) for i, g in enumerate(batch)]  # each answer once, as it ended
    expected = _slot_schedule([g.stats.completion_tokens for g in batch], 2) if refill else list(range(7))
    assert [i for i, _ in handed] == expected
    assert all(g.stats.ttft_s is not None and g.stats.ttft_s >= 0 for g in batch)


def test_a_stop_leaves_the_waiting_prompts_unasked(backends):
    hf = backends["hf"]
    prompts = [hf.tokenize(p) for p in MORE_PROMPTS]
    handed: list[int] = []
    batch = hf.generate_batch(prompts, [SamplingSettings(temperature=0, max_tokens=30)] * len(prompts),
                              _stop_after(4), slots=2, on_answer=lambda i, g: handed.append(i))
    reasons = [g.stats.stop_reason for g in batch]
    assert reasons[2:] == ["stopped"] * 5 and all(g.stats.completion_tokens == 0 for g in batch[2:])
    assert set(reasons[:2]) <= {"stopped", "eos"} and sorted(handed) == list(range(7))


def test_sliding_window_caches_are_not_joined(tmp_path):
    """A sliding-window (Mistral) or mixed (Gemma 2) cache keeps generate()'s own batching."""
    from transformers import Gemma2Config, LlamaConfig, MistralConfig

    from medalpaca_desktop.inference.hf_refill import supports_refill

    class Model:
        def __init__(self, config) -> None:
            self.config = config

    small = dict(num_hidden_layers=2, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=64)
    assert supports_refill(Model(LlamaConfig(**small)))
    assert supports_refill(Model(MistralConfig(sliding_window=None, **small)))
    assert not supports_refill(Model(MistralConfig(sliding_window=8, **small)))
    assert not supports_refill(Model(Gemma2Config(**small)))


def _quantized_copy(src, dst):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text(encoding="utf-8"))
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (dst / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return dst


def test_merge_refuses_a_quantized_base(tiny_llama_dir, tiny_lora_dir, tmp_path):
    from medalpaca_desktop.inference.hf_model import merge_lora
    from trainer.after import merge_adapter

    base = _quantized_copy(tiny_llama_dir, tmp_path / "base-8bit")
    with pytest.raises(InferenceError) as err:
        merge_lora(base, tiny_lora_dir)
    assert err.value.kind == "unsupported"
    assert "bitsandbytes 8-bit-quantized weights" in str(err.value) and "full-precision base" in str(err.value)
    with pytest.raises(InferenceError, match="full-precision base"):
        merge_adapter(base, tiny_lora_dir, tmp_path / "merged")
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged-tmp-*"))


def test_merge_of_a_full_precision_base_changes_the_weights(tiny_llama_dir, tiny_lora_dir):
    import torch

    from medalpaca_desktop.inference.hf_model import load_causal_lm, merge_lora

    merged = merge_lora(tiny_llama_dir, tiny_lora_dir)
    base = load_causal_lm(tiny_llama_dir).model
    assert not hasattr(merged, "peft_config") and getattr(merged.config, "quantization_config", None) is None
    changed = [n for n, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("proj" in n for n in changed)


def test_loader_refuses_pickle_weights(tiny_llama_dir, tmp_path):
    from medalpaca_desktop.inference.hf_model import load_causal_lm

    folder = shutil.copytree(tiny_llama_dir, tmp_path / "pickled")
    for f in folder.glob("*.safetensors"):
        f.rename(f.with_name("pytorch_model.bin"))
    with pytest.raises(InferenceError) as err:
        load_causal_lm(folder)
    assert err.value.kind == "pickle_refused"
