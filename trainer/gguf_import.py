"""GGUF → Hugging Face directory (de-quantized), for fine-tuning a model that came as GGUF.

The bundled demo model is a Q4_1 GGUF; training and the HF backend need float
weights in a Hugging Face folder. transformers' own GGUF loader does the
de-quantization and the tokenizer reconstruction; this module only turns its
result into a plain, saveable model (transformers marks a GGUF-loaded model as
quantized and refuses `save_pretrained`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

GGUF_MAGIC = b"GGUF"


class GGUFImportError(Exception):
    """One line for a person: why this file cannot become an HF model."""


def _gguf_architecture(path: Path) -> str:
    arch = _gguf_string(path, "general.architecture")
    if arch is None:
        raise GGUFImportError(f"{path.name} has no general.architecture; it is not a model GGUF.")
    return arch


#: llama.cpp pre-tokenizer types that split digits one by one before the GPT-2 regex.
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "codeshell", "command-r", "exaone"}


def _gguf_string(path: Path, key: str) -> str | None:
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get(key)
    return None if field is None else bytes(field.parts[field.data[0]]).decode("utf-8")


def _restore_digit_split(tokenizer, gguf_path: Path) -> None:
    """transformers rebuilds byte-level tokenizers with plain ByteLevel, dropping the
    Digits step that SmolLM's tokenizer (llama.cpp pre "smollm") has; put it back so
    "x  1" tokenizes as the model was trained."""
    from tokenizers import pre_tokenizers

    if _gguf_string(gguf_path, "tokenizer.ggml.pre") not in _DIGIT_SPLIT_PRE:
        return
    backend = tokenizer.backend_tokenizer
    if type(backend.pre_tokenizer).__name__ != "ByteLevel":
        return
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])


def dequantize_gguf_to_hf(gguf_path: str | Path, out_dir: str | Path,
                          progress: Callable[[str], None] | None = None) -> Path:
    """Write `gguf_path` as an HF folder (float32 safetensors + tokenizer) in `out_dir`.

    `progress`, if given, receives a short message at each stage.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    say = progress or (lambda _msg: None)
    if not gguf_path.is_file():
        raise GGUFImportError(f"GGUF file not found: {gguf_path}")
    with open(gguf_path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise GGUFImportError(f"{gguf_path.name} is not a GGUF file.")
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    try:
        arch = _gguf_architecture(gguf_path)
    except (ValueError, IndexError) as exc:
        raise GGUFImportError(f"{gguf_path.name} is not a readable GGUF file ({exc}).") from None
    if arch not in GGUF_CONFIG_MAPPING:
        supported = ", ".join(sorted(GGUF_CONFIG_MAPPING))
        raise GGUFImportError(f"GGUF architecture {arch!r} cannot be converted; supported: {supported}.")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from medalpaca_desktop.inference.hf_model import load_causal_lm

    hf_logging.disable_progress_bar()
    folder, name = str(gguf_path.parent), gguf_path.name
    say("reading tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
    _restore_digit_split(tokenizer, gguf_path)
    say("de-quantizing weights")
    loaded = load_causal_lm(folder, gguf_file=name, dtype=torch.float32, device=None).model
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf_path.stem
    say("building a plain model")
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    plain.tie_weights()
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise GGUFImportError(f"{gguf_path.name} lacks weights the {arch} model needs: {', '.join(missing[:3])}")
    plain.eval()
    say("saving")
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
