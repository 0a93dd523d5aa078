"""trainer.estimate against published figures (sanity bounds, not exact predictions).

Figures (see trainer/estimate.py for the sources):
- ZeRO (Rajbhandari et al. 2020): mixed-precision Adam keeps 16 bytes per parameter of model
  states; a 7.5B model needs 120 GB.
- A full fine-tune of LLaMA-7B with Adam therefore needs well over 100 GB on one GPU.
- QLoRA (Dettmers et al. 2023): a 65B model fine-tuned on a single 48 GB GPU; checked here with
  this app's default adapters (r 8 on q_proj, v_proj), batch 1, 512 tokens, gradient checkpointing.
- Common planning bounds for LLaMA-7B at batch 1, 512 tokens: LoRA on a 16-bit base 14-20 GB;
  QLoRA under 12 GB; an 8-bit base between the two.
"""

from __future__ import annotations

import pytest

from trainer.estimate import (
    MemoryBreakdown,
    estimate_from_hf_config,
    estimate_training_memory,
    lora_trainable_params,
    params_from_hf_config,
)

GB = 1e9
LLAMA_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 32000, "num_attention_heads": 32,
            "intermediate_size": 11008, "tie_word_embeddings": False}
LLAMA_65B = {"hidden_size": 8192, "num_hidden_layers": 80, "vocab_size": 32000, "num_attention_heads": 64,
             "intermediate_size": 22016, "tie_word_embeddings": False}


def llama7b(method: str, checkpointing: bool = False, **kw) -> MemoryBreakdown:
    return estimate_from_hf_config(LLAMA_7B, method, micro_batch=1, seq_len=512,
                                   gradient_checkpointing=checkpointing, **kw)


def test_parameter_counts_match_the_published_models():
    assert params_from_hf_config(LLAMA_7B) == 6_738_415_616  # LLaMA-7B
    assert 65.0e9 < params_from_hf_config(LLAMA_65B) < 65.5e9  # LLaMA-65B
    assert lora_trainable_params(4096, 32, 8, 2) == 4_194_304  # peft's count for r 8 on q_proj, v_proj


def test_zero_paper_16_bytes_per_parameter():
    est = estimate_training_memory(7_500_000_000, "full", 1, 512, 4096, 32, 32000, True, "fp16")
    assert est.weights + est.gradients + est.optimizer == 120 * GB  # ZeRO's 7.5B example: 120 GB
    fp32 = estimate_training_memory(7_500_000_000, "full", 1, 512, 4096, 32, 32000, True, "fp32")
    assert fp32.weights + fp32.gradients + fp32.optimizer == 120 * GB


def test_full_finetune_of_7b_needs_over_100_gb():
    est = llama7b("full")
    assert est.total > 100 * GB
    assert est.trainable_params == params_from_hf_config(LLAMA_7B)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_lora_7b_16bit_is_14_to_20_gb(checkpointing):
    est = llama7b("lora", checkpointing)
    assert 13.4 * GB <= est.weights  # the 16-bit weights alone: 2 bytes x 6.74B = 13.48 GB
    assert (13.9 if checkpointing else 14) * GB <= est.total <= 20 * GB
    assert est.gradients < 0.1 * GB and est.optimizer < 0.1 * GB  # only the adapters train


@pytest.mark.parametrize("checkpointing", [False, True])
def test_qlora_7b_fits_in_12_gb(checkpointing):
    est = llama7b("qlora", checkpointing)
    assert est.total < 12 * GB
    assert 3.3 * GB < est.weights < 5 * GB  # 0.5 byte per parameter + constants + unquantized embeddings


def test_methods_order_and_checkpointing_helps():
    totals = [llama7b(m).total for m in ("qlora", "lora-8bit", "lora", "full")]
    assert totals == sorted(totals)
    assert 7 * GB < llama7b("lora-8bit").total < 14 * GB
    assert llama7b("lora", True).activations < llama7b("lora").activations / 5


def test_qlora_65b_fits_a_48_gb_gpu():
    est = estimate_from_hf_config(LLAMA_65B, "qlora", micro_batch=1, seq_len=512, gradient_checkpointing=True)
    assert 30 * GB < est.total < 48 * GB


def test_activations_follow_korthikanti():
    one = estimate_training_memory(10**9, "lora", 1, 1024, 2048, 1, 1, False, "bf16", heads=16)
    s, b, h, a = 1024, 1, 2048, 16
    assert one.activations == int(s * b * h * (34 + 5 * a * s / h)) + s * b * 1 * 10
    double = estimate_training_memory(10**9, "lora", 2, 1024, 2048, 1, 1, False, "bf16", heads=16)
    assert double.activations == 2 * one.activations


def test_breakdown_helpers_and_errors():
    est = llama7b("qlora", True)
    assert est.total == est.weights + est.gradients + est.optimizer + est.activations
    assert est.fits(int(12 * GB)) and not est.fits(int(4 * GB))
    assert est.describe().startswith("≈ ") and "activations" in est.describe()
    assert any("QLoRA" in n for n in est.notes) and est.to_dict()["notes"] == list(est.notes)
    assert any("checkpointing" in n for n in llama7b("qlora").notes)  # activations are half of it
    assert not any("gradient checkpointing would" in n for n in est.notes)
    with pytest.raises(ValueError, match="method"):
        estimate_training_memory(10**9, "prefix", 1, 512, 4096, 32, 32000, False, "bf16")
    with pytest.raises(ValueError, match="seq_len"):
        estimate_training_memory(10**9, "lora", 1, 0, 4096, 32, 32000, False, "bf16")
