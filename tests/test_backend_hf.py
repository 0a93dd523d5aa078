"""The transformers backend on real tiny models: load paths, faithfulness, streaming, stop, cache, scoring.

Faithfulness is the point: with temperature 0 the backend's text must equal the
library's own greedy `generate` (raw prompt and chat template), and reusing the
conversation's KV cache must not change a single token.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from medalpaca_desktop.core.chat_protocol import LoadSpec, SamplingSettings
from medalpaca_desktop.inference.base import InferenceError, create_backend
from medalpaca_desktop.inference.hf import HFBackend
from medalpaca_desktop.inference.hf_stream import StopStringFilter

PROMPT = "The patient has a fever and"
GREEDY = SamplingSettings(temperature=0.0, repeat_penalty=1.0, max_tokens=24)


def _load(path: Path, **spec) -> tuple[HFBackend, list[tuple[str, float | None]]]:
    stages: list[tuple[str, float | None]] = []
    backend = create_backend("hf")
    assert isinstance(backend, HFBackend)
    backend.load(LoadSpec(model=str(path), **spec), lambda msg, frac: stages.append((msg, frac)))
    return backend, stages


def _run(backend: HFBackend, ids: list[int], sampling: SamplingSettings = GREEDY, should_stop=lambda: False):
    pieces: list[str] = []
    stats = backend.generate(ids, sampling, pieces.append, should_stop)
    return "".join(pieces), stats, pieces


def _reference(model, tok, prompt_ids: list[int], n: int) -> str:
    ids = torch.tensor([prompt_ids])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n)
    return tok.decode(out[0, len(prompt_ids):], skip_special_tokens=True)


class FedTokens:
    """Counts the tokens the model actually evaluates (embedding lookups), forward by forward."""

    def __init__(self, backend: HFBackend) -> None:
        self.calls: list[int] = []
        emb = backend._base_model().get_input_embeddings()
        self._handle = emb.register_forward_pre_hook(lambda _m, args: self.calls.append(args[0].shape[-1]))

    @property
    def total(self) -> int:
        return sum(self.calls)

    def close(self) -> None:
        self._handle.remove()


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    backend, _ = _load(tiny_llama_dir)
    yield backend
    backend.unload()


@pytest.fixture(scope="module")
def tiny_ref(tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    return model, tok


# ---------------------------------------------------------------- load + faithfulness

def test_fp32_load_reports_and_greedy_equals_generate(tiny_llama_dir, tiny_ref):
    backend, stages = _load(tiny_llama_dir)
    model, tok = tiny_ref
    assert stages[0][1] == 0.0 and stages[-1] == ("Ready", 1.0)
    assert any("weights" in msg for msg, _ in stages)
    fractions = [f for _, f in stages if f is not None]
    assert fractions == sorted(fractions)
    ids = tok(PROMPT)["input_ids"]
    assert backend.tokenize(PROMPT) == ids
    text, stats, pieces = _run(backend, ids)
    assert text == _reference(model, tok, ids, GREEDY.max_tokens)
    assert len(pieces) > 1  # streamed, not one block
    assert stats.prompt_tokens == len(ids) and 0 < stats.completion_tokens <= GREEDY.max_tokens
    assert stats.stop_reason in ("eos", "length") and stats.ttft_s is not None and stats.ttft_s > 0
    assert backend.context_length == 256


def test_long_prompt_is_evaluated_in_chunks_and_stays_faithful(tiny, tiny_ref):
    model, tok = tiny_ref
    text = " ".join(["The patient reports chest pain and shortness of breath."] * 30)
    ids = tok(text)["input_ids"][:200]
    tiny._prompt_cache.reset()
    tiny._prefill_chunk = 32
    fed = FedTokens(tiny)
    try:
        out, stats, _ = _run(tiny, ids, SamplingSettings(temperature=0, max_tokens=12))
    finally:
        fed.close()
    prompt_steps = fed.calls[:-(stats.completion_tokens - 1)]
    assert sum(prompt_steps) == 200 and len(prompt_steps) > 2  # a stop request is checked between these
    assert tiny._prefill_chunk > 32  # a fast model gets bigger chunks
    assert out == _reference(model, tok, ids, 12)
    # A stop requested during prompt evaluation ends it after the current chunk.
    tiny._prompt_cache.reset()
    tiny._prefill_chunk = 32
    fed = FedTokens(tiny)
    try:
        _, stats, _ = _run(tiny, ids, should_stop=lambda: len(fed.calls) >= 1)
    finally:
        fed.close()
    assert stats.stop_reason == "stopped" and stats.completion_tokens == 0 and fed.calls == [32]


def test_demo_model_raw_and_chat_template_equal_transformers(demo_hf_dir):
    backend, _ = _load(demo_hf_dir)
    tok = AutoTokenizer.from_pretrained(demo_hf_dir)
    model = AutoModelForCausalLM.from_pretrained(demo_hf_dir, dtype=torch.float32).eval()
    n = 16
    raw_ids = tok("The first-line treatment of community-acquired pneumonia is")["input_ids"]
    raw, _, _ = _run(backend, raw_ids, SamplingSettings(temperature=0, max_tokens=n))
    assert raw == _reference(model, tok, raw_ids, n)
    messages = [{"role": "user", "content": "What is hypertension?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    chat_ids = backend.tokenize(rendered, add_special=False)
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    assert chat_ids == enc["input_ids"][0].tolist()
    chat, stats, _ = _run(backend, chat_ids, SamplingSettings(temperature=0, max_tokens=n))
    out = model.generate(**enc, do_sample=False, max_new_tokens=n)
    assert chat == tok.decode(out[0, len(chat_ids):], skip_special_tokens=True)
    assert chat.strip() and stats.completion_tokens > 0
    backend.unload()


@pytest.mark.parametrize("load_in, layer", [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_bitsandbytes_loads_and_generates_on_this_device(tiny_llama_dir, load_in, layer):
    import bitsandbytes as bnb

    backend, _ = _load(tiny_llama_dir, load_in=load_in)
    bnb_class = getattr(bnb.nn, layer)
    decoder = backend._base_model().model.layers
    linears = [m for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 7 * len(decoder) and all(isinstance(m, bnb_class) for m in linears)
    proj = decoder[0].self_attn.q_proj
    if load_in == "4bit":
        assert proj.weight.quant_state.nested  # double quantization
        assert proj.weight.quant_type == "nf4"
    text, stats, _ = _run(backend, backend.tokenize(PROMPT), SamplingSettings(temperature=0, max_tokens=8))
    assert stats.completion_tokens > 0 and stats.stop_reason in ("eos", "length")
    backend.unload()


def test_lora_adapter_changes_the_answer(tiny_llama_dir, tiny_lora_dir, tiny):
    from peft import PeftModel

    adapted, _ = _load(tiny_llama_dir, adapter=str(tiny_lora_dir))
    assert isinstance(adapted._model, PeftModel)
    ids = tiny.tokenize(PROMPT)
    base_text, _, _ = _run(tiny, ids)
    lora_text, _, _ = _run(adapted, ids)
    assert lora_text != base_text
    adapted.unload()


def test_adapter_with_a_trained_template_prompts_in_that_format(tiny_llama_dir, tiny_lora_dir, tmp_path):
    """A fine-tune's adapter folder carries the template it learned (trainer/after.py): chat uses it."""
    from trainer.after import write_template_metadata

    adapter = tmp_path / "final"
    shutil.copytree(tiny_lora_dir, adapter)
    plain, _ = _load(tiny_llama_dir, adapter=str(tiny_lora_dir))
    base_template = plain._tokenizer.chat_template
    plain.unload()
    write_template_metadata(adapter, "medalpaca", "</s>")
    backend = create_backend("hf")
    loaded = backend.load(LoadSpec(model=str(tiny_llama_dir), adapter=str(adapter)), lambda *_: None)
    assert loaded.chat_template == (adapter / "chat_template.jinja").read_text(encoding="utf-8")
    assert loaded.chat_template != base_template and "### Response:" in loaded.chat_template
    backend.unload()


# ---------------------------------------------------------------- stop, stop strings, seed

def test_stop_lands_within_one_token(tiny):
    ids = tiny.tokenize(PROMPT)
    fed = FedTokens(tiny)
    seen: list[str] = []
    at_flip: list[int] = []

    def should_stop() -> bool:
        if len(seen) >= 3 and not at_flip:
            at_flip.append(len(fed.calls))  # each forward (the prompt's included) yields one token
        return bool(at_flip)

    try:
        stats = tiny.generate(ids, SamplingSettings(temperature=0, max_tokens=200), seen.append, should_stop)
    finally:
        fed.close()
    assert stats.stop_reason == "stopped"
    assert at_flip == [3]
    assert stats.completion_tokens <= at_flip[0] + 1  # the requirement: at most one more token
    assert len(fed.calls) == stats.completion_tokens == at_flip[0]  # and in fact none


def test_stop_before_start_evaluates_nothing(tiny):
    fed = FedTokens(tiny)
    try:
        text, stats, _ = _run(tiny, tiny.tokenize(PROMPT * 20), should_stop=lambda: True)
    finally:
        fed.close()
    assert (text, stats.completion_tokens, stats.stop_reason) == ("", 0, "stopped")
    assert fed.total == 0


def test_stop_string_ends_the_answer_and_is_not_shown(tiny):
    ids = tiny.tokenize(PROMPT)
    full, _, _ = _run(tiny, ids, SamplingSettings(temperature=0, max_tokens=40))
    visible = full.replace("\ufffd", "")
    stop = next(visible[i:i + 3] for i in range(4, len(visible) - 3) if visible[i:i + 3].strip())
    text, stats, _ = _run(tiny, ids, SamplingSettings(temperature=0, max_tokens=40, stop=[stop]))
    assert stats.stop_reason == "stop_string"
    assert text == full[:full.find(stop)] and stop not in text
    assert stats.completion_tokens < 40


def test_stop_string_split_across_pieces_is_held_back():
    f = StopStringFilter(["###", "User:"])
    shown = [f.feed(p) for p in ["Answer is 4.", " #", "#", " not yet", "\nUs", "er", ":", " more"]]
    assert "".join(shown) == "Answer is 4. ## not yet\n"
    assert shown[1] == " " and f.hit and f.flush() == ""


def test_seed_repeats_a_sampled_answer(tiny):
    ids = tiny.tokenize(PROMPT)
    hot = SamplingSettings(temperature=1.5, top_p=1.0, top_k=0, max_tokens=20, seed=7)
    first, _, _ = _run(tiny, ids, hot)
    again, _, _ = _run(tiny, ids, hot)
    other = {_run(tiny, ids, SamplingSettings(**{**hot.__dict__, "seed": s}))[0] for s in (8, 9)}
    assert first == again
    assert other - {first}
    greedy, _, _ = _run(tiny, ids, SamplingSettings(temperature=0, max_tokens=20))
    nucleus_of_one, _, _ = _run(tiny, ids, SamplingSettings(temperature=1.0, top_p=0.0, max_tokens=20, seed=3))
    assert nucleus_of_one == greedy  # top_p 0 keeps only the most likely token


# ---------------------------------------------------------------- KV cache reuse

def test_follow_up_turn_feeds_only_new_tokens_and_changes_nothing(tiny, tiny_llama_dir):
    tok = tiny._tokenizer
    turn1 = tok.apply_chat_template([{"role": "user", "content": "Fever and cough?"}], tokenize=False,
                                    add_generation_prompt=True)
    ids1 = tiny.tokenize(turn1, add_special=False)
    tiny._prompt_cache.reset()
    answer, s1, _ = _run(tiny, ids1, SamplingSettings(temperature=0, max_tokens=10))
    assert s1.reused_prefix_tokens == 0
    answer_ids = tiny._prompt_cache.ids[len(ids1):]  # the answer tokens the cache holds
    ids2 = ids1 + answer_ids + tiny.tokenize("<|im_end|>\n<|im_start|>user\nAnd the dose?<|im_end|>\n"
                                             "<|im_start|>assistant\n", add_special=False)
    fed = FedTokens(tiny)
    try:
        reused_text, s2, _ = _run(tiny, ids2)
    finally:
        fed.close()
    assert s2.reused_prefix_tokens == len(ids1) + len(answer_ids)
    # only the new tokens are evaluated (in one pass or, on a busy machine, in adaptive chunks), then one per token
    assert fed.total == len(ids2) - s2.reused_prefix_tokens + s2.completion_tokens - 1

    fresh, _ = _load(tiny_llama_dir)
    fresh_text, s3, _ = _run(fresh, ids2)
    assert s3.reused_prefix_tokens == 0
    assert reused_text == fresh_text
    # Regenerate the first turn: the cache is cropped back into the prompt, and the answer is the same.
    again, s4, _ = _run(tiny, ids1, SamplingSettings(temperature=0, max_tokens=10))
    assert s4.reused_prefix_tokens == len(ids1) - 1 and again == answer
    fresh.unload()


# ---------------------------------------------------------------- score

def test_score_equals_direct_log_softmax(tiny, tiny_ref):
    model, tok = tiny_ref
    context = "The patient has a fever and "
    options = ["chest pain.", "a cough", "x", "tachycardia with a very long tail of tokens here"]
    scores = tiny.score(context, options, lambda: False)
    for option, got in zip(options, scores):
        ctx_ids = tok(context.rstrip())["input_ids"]
        whole = tok(context + option)["input_ids"]
        cont = whole[len(ctx_ids):]
        with torch.no_grad():
            logits = model(torch.tensor([ctx_ids + cont])).logits[0]
        logp = torch.log_softmax(logits, dim=-1)
        direct = sum(float(logp[len(ctx_ids) - 1 + j, t]) for j, t in enumerate(cont))
        assert got == pytest.approx(direct, abs=1e-4)
    assert tiny.score("", ["Hello"], lambda: False)[0] < 0
    assert tiny.encode_pair("", "Hello")[0] == [tok.bos_token_id]
    with pytest.raises(InferenceError) as err:
        tiny.score(context, options, lambda: True)
    assert err.value.kind == "stopped"


# ---------------------------------------------------------------- refusals and errors

def _copy_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        if p.suffix != ".safetensors":
            shutil.copy(p, dst / p.name)
    return dst


def test_pickle_weights_are_refused_unless_allowed(tiny_llama_dir, tiny_ref, tmp_path):
    folder = _copy_without_weights(tiny_llama_dir, tmp_path / "pickled")
    torch.save(tiny_ref[0].state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(InferenceError) as err:
        _load(folder)
    assert err.value.kind == "pickle_refused"
    backend, _ = _load(folder, allow_pickle=True)
    assert _run(backend, backend.tokenize(PROMPT), SamplingSettings(temperature=0, max_tokens=4))[1].completion_tokens
    backend.unload()


@pytest.mark.parametrize("case, kind", [
    ("missing", "not_found"), ("gguf", "unsupported"), ("no_config", "unsupported"),
    ("bad_config", "corrupt"), ("truncated", "corrupt"), ("no_weights", "corrupt"), ("unknown_arch", "unsupported"),
    ("missing_adapter", "not_found"),
])
def test_load_errors_have_a_kind(tiny_llama_dir, tmp_path, case, kind):
    folder = tmp_path / case
    spec: dict = {}
    if case == "gguf":
        folder = tmp_path / "m.gguf"
        folder.write_bytes(b"GGUF" + bytes(64))
    elif case == "no_config":
        folder.mkdir()
    elif case in ("bad_config", "truncated", "no_weights", "unknown_arch", "missing_adapter"):
        shutil.copytree(tiny_llama_dir, folder)
        if case == "bad_config":
            (folder / "config.json").write_text("{not json")
        elif case == "truncated":
            data = (folder / "model.safetensors").read_bytes()
            (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        elif case == "no_weights":
            (folder / "model.safetensors").unlink()
        elif case == "unknown_arch":
            (folder / "config.json").write_text('{"model_type": "no-such-arch", "architectures": ["NoSuchLM"]}')
        else:
            spec["adapter"] = str(tmp_path / "nowhere")
    with pytest.raises(InferenceError) as err:
        _load(folder, **spec)
    assert err.value.kind == kind, str(err.value)


def test_calls_before_load_say_not_loaded():
    backend = create_backend("hf")
    with pytest.raises(InferenceError) as err:
        backend.tokenize("x")
    assert err.value.kind == "not_loaded"


def test_remote_code_is_off_unless_asked(tiny_llama_dir, tmp_path):
    folder = shutil.copytree(tiny_llama_dir, tmp_path / "remote")
    (folder / "config.json").write_text(
        '{"model_type": "medalpaca-custom", "architectures": ["CustomLM"],'
        ' "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",'
        ' "AutoModelForCausalLM": "modeling_custom.CustomLM"}}')
    (folder / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(InferenceError) as err:
        _load(folder)
    assert err.value.kind == "unsupported" and "trust_remote_code" in str(err.value)


def test_too_large_is_refused_before_loading(tiny_llama_dir, monkeypatch):
    from medalpaca_desktop.inference import hf_load

    monkeypatch.setattr(hf_load, "free_bytes", lambda device: 1000)  # a machine with 1 kB free
    with pytest.raises(InferenceError) as err:
        _load(tiny_llama_dir)
    assert err.value.kind == "too_large" and "4-bit" in str(err.value)


def test_a_model_larger_than_one_gpu_is_spread_over_several(tiny_llama_dir, monkeypatch):
    from medalpaca_desktop.inference import hf_load

    gb = 10**9
    # 26 GB of fp16 weights (a 13B model): not on one 24 GB card, on two of them
    assert hf_load.spreads_over_gpus(26 * gb, [24 * gb, 24 * gb])
    assert not hf_load.spreads_over_gpus(26 * gb, [24 * gb])  # one GPU: refused as too large
    assert not hf_load.spreads_over_gpus(20 * gb, [24 * gb, 24 * gb])  # fits one: stays on it
    assert not hf_load.spreads_over_gpus(46 * gb, [24 * gb, 24 * gb])  # over 90 % of both: too large
    assert hf_load.spread_max_memory([10 * gb, 20 * gb]) == {0: 9 * gb, 1: 18 * gb}

    folder = tiny_llama_dir
    config = json.loads((folder / "config.json").read_text())
    monkeypatch.setattr(hf_load, "free_bytes", lambda device: 1000)
    monkeypatch.setattr(hf_load, "gpu_free_list", lambda: [1000, 10**12])
    gpu = hf_load.Placement("cuda:0", "float16")
    placed = hf_load.check_memory(folder, config, LoadSpec(model=str(folder)), gpu)
    assert placed.device == hf_load.SPREAD and "spread over 2 GPUs" in placed.notes[-1]
    monkeypatch.setattr(hf_load, "gpu_free_list", lambda: [1000, 1000])
    with pytest.raises(InferenceError) as err:
        hf_load.check_memory(folder, config, LoadSpec(model=str(folder)), gpu)
    assert err.value.kind == "too_large"


def test_out_of_memory_is_recognised():
    from medalpaca_desktop.inference.hf_load import is_oom, load_error

    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    err = load_error(MemoryError(), Path("big-model"), LoadSpec())
    assert err.kind == "oom" and "8-bit or 4-bit" in str(err)


def test_context_window_limits_the_answer(tiny):
    ids = tiny.tokenize(" ".join(["chest pain"] * 400))
    full = ids[: tiny.context_length]
    _, stats, _ = _run(tiny, full)
    assert (stats.completion_tokens, stats.stop_reason) == (0, "context_full")
    near = ids[: tiny.context_length - 3]
    _, stats, _ = _run(tiny, near, SamplingSettings(temperature=0, max_tokens=50))
    assert stats.completion_tokens <= 3 and stats.stop_reason in ("context_full", "eos")


def test_missing_weights_are_reported(tiny_llama_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(tiny_llama_dir, tmp_path / "partial")
    tensors = load_file(folder / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    backend = create_backend("hf")
    info = backend.load(LoadSpec(model=str(folder)), lambda *_: None)
    assert any("missing" in note and "lm_head.weight" in note for note in info.notes)
    backend.unload()


TRICKY = "Dr. Müller's café: 500 mg q8h (±10 %). é ü 中文 😀 ✓\n\n  spaced  <|im_end|> after"


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_llama_sp_dir"])
def test_streamed_pieces_join_to_the_full_decode(request, fixture):
    from medalpaca_desktop.inference.hf_stream import IncrementalDecoder

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    ids = tok(TRICKY)["input_ids"]
    decoder = IncrementalDecoder(tok)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in p for p in pieces)  # no half characters on screen
    if fixture == "tiny_llama_sp_dir":  # an invalid byte run turns into U+FFFDs as a whole, valid bytes too
        ids = tok.convert_tokens_to_ids(["▁the", "<0x63>", "<0x3C>", "<0xAD>", "<0xA6>", "<0x72>", "▁the"])
        decoder = IncrementalDecoder(tok)
        pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
        assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True)
        assert "c<" not in "".join(pieces)


def test_sentencepiece_model_with_bos_is_faithful(tiny_llama_sp_dir):
    backend, _ = _load(tiny_llama_sp_dir)
    tok = AutoTokenizer.from_pretrained(tiny_llama_sp_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_sp_dir, dtype=torch.float32).eval()
    ids = tok(PROMPT)["input_ids"]
    assert ids[0] == tok.bos_token_id and backend.tokenize(PROMPT) == ids
    text, _, _ = _run(backend, ids)
    assert text == _reference(model, tok, ids, GREEDY.max_tokens)
    scores = backend.score("The patient has", [" a fever", " chest pain"], lambda: False)
    ctx = tok("The patient has")["input_ids"]
    whole = tok("The patient has a fever")["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0], dim=-1)
    direct = sum(float(logp[j - 1, whole[j]]) for j in range(len(ctx), len(whole)))
    assert scores[0] == pytest.approx(direct, abs=1e-4)
    backend.unload()


# ---------------------------------------------------------------- batching by a token budget


def test_token_budget_fits_the_free_gpu_memory_and_stays_4096_on_a_cpu(tiny):
    from medalpaca_desktop.inference import hf_score

    assert hf_score.token_budget(tiny._model, "cpu") == hf_score.TOKENS_PER_BATCH
    # a 7B LLaMA layout (hidden 4,096, intermediate 11,008, fp16) with 60 GB free: ~156 k tokens per pass
    assert hf_score.budget_for_memory(60 * 10**9, 4096, 11008, 2) == 156_250
    assert hf_score.budget_for_memory(10**6, 4096, 11008, 2) == hf_score.TOKENS_PER_BATCH  # never below
    assert hf_score.budget_for_memory(10**15, 4096, 11008, 2) == hf_score.MAX_TOKENS_PER_BATCH


def test_a_pass_that_runs_out_of_memory_is_split_and_gives_the_same_numbers(tiny, monkeypatch):
    from medalpaca_desktop.inference import hf_score

    ids = [tiny.tok_encode(f"Question {i}: which organ makes insulin? " * (1 + i % 3) + "Answer:") for i in range(7)]
    letters = [tiny.tok_encode(" A")[-1:], tiny.tok_encode(" B")[-1:]]
    requests = [(ctx, letters) for ctx in ids]
    whole = hf_score.score_requests(tiny._model, tiny._tokenizer, requests, 512, "cpu", lambda: False, max_rows=8)
    model = tiny._model
    real_forward = model.forward
    refused: list[int] = []
    ran: list[int] = []

    def forward(*args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        if rows > 2:
            refused.append(rows)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        ran.append(rows)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    split = hf_score.score_requests(model, tiny._tokenizer, requests, 512, "cpu", lambda: False, max_rows=8)
    assert refused[0] == 7 and sum(ran) == 7  # every question scored once, in passes that fit
    assert [v for row in split for v in row] == pytest.approx([v for row in whole for v in row], abs=1e-4)
