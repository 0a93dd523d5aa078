"""Session-scoped tiny-model fixtures, registered by conftest (pytest_plugins).

Names are a contract other test modules rely on:

- tiny_llama_dir     HF LLaMA dir, byte-level BPE tokenizer (ChatML specials), built in ~1 s
- tiny_llama_sp_dir  same model shape, SentencePiece (LLaMA-2 style) tokenizer
- tiny_gguf          f32 GGUF of tiny_llama_dir, written by the project's exporter
- tiny_lora_dir      peft LoRA adapter for tiny_llama_dir with nonzero weights
- demo_gguf          the bundled SmolLM2-135M Q4_1 GGUF (missing file = failure, not skip)
- demo_hf_dir        demo_gguf de-quantized into an HF dir by trainer/gguf_import.py (~15 s)
"""

from __future__ import annotations

from pathlib import Path

import model_factory
import pytest


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return model_factory.build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), tokenizer="bpe")


@pytest.fixture(scope="session")
def tiny_llama_sp_dir(tmp_path_factory) -> Path:
    return model_factory.build_tiny_llama(tmp_path_factory.mktemp("tiny_llama_sp"), tokenizer="sentencepiece")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_llama_dir, tmp_path_factory) -> Path:
    from trainer.export import ExportConfig, export_gguf

    out = tmp_path_factory.mktemp("tiny_gguf") / "tiny-llama.f32.gguf"
    return export_gguf(ExportConfig(model=tiny_llama_dir, out=out, quant="f32"))


@pytest.fixture(scope="session")
def tiny_lora_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    return model_factory.build_tiny_lora(tiny_llama_dir, tmp_path_factory.mktemp("tiny_lora"))


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    try:
        return model_factory.find_demo_gguf()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def demo_hf_dir(demo_gguf, tmp_path_factory) -> Path:
    from trainer.gguf_import import dequantize_gguf_to_hf

    return dequantize_gguf_to_hf(demo_gguf, tmp_path_factory.mktemp("demo_hf"))
