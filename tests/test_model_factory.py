"""The tiny-model fixtures are real models: they load, tokenize and run forward."""

from __future__ import annotations

import json
import time

import model_factory
import pytest


def test_tiny_llama_dir_is_a_loadable_hf_model(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # GQA paths run
    assert (tiny_llama_dir / "model.safetensors").is_file()
    assert not list(tiny_llama_dir.glob("*.bin"))
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert 300 <= len(tok) <= 512
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tok("Dose 12345 mg, é 中文 😀").input_ids
    assert tok.decode(ids) == "Dose 12345 mg, é 中文 😀"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tok))
    assert torch.isfinite(logits).all()


def test_tiny_llama_sp_dir_uses_sentencepiece_with_byte_fallback(tiny_llama_sp_dir):
    from transformers import AutoTokenizer

    assert (tiny_llama_sp_dir / "tokenizer.model").is_file()
    tok = AutoTokenizer.from_pretrained(tiny_llama_sp_dir)
    assert type(tok).__name__ in ("LlamaTokenizer", "LlamaTokenizerFast")
    ids = tok("中文 😀").input_ids
    assert ids[0] == tok.bos_token_id
    assert any(t.startswith("<0x") for t in tok.convert_ids_to_tokens(ids))  # byte fallback used
    assert tok.decode(ids, skip_special_tokens=True) == "中文 😀"


def test_tiny_lora_changes_the_model(tiny_llama_dir, tiny_lora_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert (tiny_lora_dir / "adapter_model.safetensors").is_file()
    ids = torch.tensor([[5, 6, 7, 8]])
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        before = base(ids).logits
        after = PeftModel.from_pretrained(base, tiny_lora_dir)(ids).logits
    assert (after - before).abs().max() > 1e-2


def test_building_is_deterministic_and_fast(tmp_path, tiny_llama_dir):
    from safetensors.torch import load_file

    start = time.monotonic()
    again = model_factory.build_tiny_llama(tmp_path / "again", tokenizer="bpe")
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"tiny_llama_dir took {elapsed:.1f} s to build"
    a, b = load_file(tiny_llama_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert (tiny_llama_dir / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()


def test_demo_gguf_is_bundled(demo_gguf):
    assert demo_gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert demo_gguf.stat().st_size > 50_000_000
    with open(demo_gguf, "rb") as fh:
        assert fh.read(4) == b"GGUF"


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_unknown_tokenizer_kind_is_refused(tmp_path, kind):
    with pytest.raises(ValueError):
        model_factory.build_tiny_llama(tmp_path, tokenizer=kind + "-nope")
