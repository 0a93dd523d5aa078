"""Small model files for UI tests, written in milliseconds without torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"


def write_tiny_gguf(path: Path, name: str = "tiny-medical", context_length: int = 2048) -> Path:
    """A valid LLaMA-architecture GGUF file with two small f32 tensors."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(context_length)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_head_count(2)
    writer.add_feed_forward_length(16)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones((8,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_corrupt_gguf(path: Path) -> Path:
    """A file named .gguf that is not one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a gguf file at all\n" * 4)
    return path


def write_pickle_hf_dir(folder: Path) -> Path:
    """A Hugging Face LLaMA folder whose weights are pickle (.bin): listed, never loaded by default."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
              "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
              "vocab_size": 32, "max_position_embeddings": 512, "torch_dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02fake pickle bytes")
    return folder
