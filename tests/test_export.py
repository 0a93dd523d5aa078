"""GGUF export: llama.cpp must tokenize and compute as transformers does.

Fidelity numbers (relative logit error = max |llama.cpp - transformers| / max
|transformers|, argmax agreement) are printed with `-s` and attached to the
test report as properties.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medalpaca_desktop.core.events import parse_line
from trainer.export import SUPPORTED_ARCHITECTURES, ExportConfig, ExportError, export_gguf

REPO = Path(__file__).resolve().parents[1]

PROMPT = "The patient is a 54-year-old man with chest pain. Troponin 2.35 ng/mL: the diagnosis?"

TEXTS = [
    "Hello world",
    "12345 3.14159",
    "é ü 中文 😀",
    "a   b\n\n\tc",
    "x  1",
    "I've been told he's there; they'll see.",
    "Dr. Müller's café: 500 mg q8h (±10 %).",
    "trailing spaces   ",
    "\n\n\n",
    "Ελληνικά, русский, हिन्दी, العربية",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text before<|im_end|>text after <|im_start|> spaced",
    "<|user|>\nWhat is 2+2? <|end|>\n<|assistant|> four<|endoftext|>",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "  leading spaces",
    " ",
]

#: q8_0 must keep the argmax on >= 98 % of the positions where the reference's top-2 gap is
#: at least NEAR_TIE logits. Over *all* positions it cannot: llama.cpp's CPU kernels round
#: the activations to 8 bits in every quantized matmul, which flips near-ties even with
#: exact weights: the shipped Q4_1 demo file, whose weights *are* demo_hf_dir's, agrees on
#: ~96 % of positions, every miss a near-tie (gap <= 0.25 against a median gap of ~1.1).
#: Over all positions q8_0 must still agree on >= 95 % (measured ~97 %).
Q8_MIN_DECISIVE_AGREEMENT = 0.98
Q8_MIN_AGREEMENT = 0.95
NEAR_TIE = 0.25

GGML_TYPE_F32 = 0  # KV cache in f32, so the comparison measures the export, not cache rounding


# --------------------------------------------------------------------------- helpers


def export(model: Path, out: Path, quant: str, **kw) -> Path:
    return export_gguf(ExportConfig(model=model, out=out, quant=quant, **kw))


def llama_tokenize(gguf: Path, texts: list[str], add_bos: bool) -> list[list[int]]:
    from llama_cpp import Llama

    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        return [llm.tokenize(t.encode("utf-8"), add_bos=add_bos, special=True) for t in texts]
    finally:
        llm.close()


def gguf_logits(gguf: Path, ids: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(str(gguf), logits_all=True, embedding=False, n_ctx=max(64, len(ids) + 8), n_batch=512,
                n_threads=2, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def hf_logits(model_dir: Path, ids: list[int], adapter: Path | None = None) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def fidelity(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
    return rel, agree


def decisive_agreement(got: np.ndarray, ref: np.ndarray, margin: float = NEAR_TIE) -> tuple[float, int]:
    """Argmax agreement on the positions whose reference top-2 gap is >= margin, and their count."""
    top2 = np.sort(ref, axis=-1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) >= margin
    same = got.argmax(-1) == ref.argmax(-1)
    return float(same[decisive].mean()), int(decisive.sum())


def assert_q8_agreement(got: np.ndarray, ref: np.ndarray, agree: float) -> None:
    decisive, count = decisive_agreement(got, ref)
    print(f"[fidelity]   decisive positions={count}/{len(ref)} agreement there={decisive:.4f}")
    assert count >= len(ref) // 4, "too few decisive positions to judge"
    assert decisive >= Q8_MIN_DECISIVE_AGREEMENT
    assert agree >= Q8_MIN_AGREEMENT


def report(record_property, label: str, rel: float | None = None, agree: float | None = None, n: int = 0) -> None:
    parts = [f"[fidelity] {label}: tokens={n}"]
    if rel is not None:
        parts.append(f"rel_logit_err={rel:.2e}")
        record_property(f"{label} rel_logit_err", rel)
    if agree is not None:
        parts.append(f"argmax_agreement={agree:.4f}")
        record_property(f"{label} argmax_agreement", agree)
    print("  ".join(parts))


def prompt_ids(model_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT).input_ids
    assert 20 <= len(ids) <= 64, len(ids)
    return ids


def _sp_legacy_ids(tok, sp, text: str) -> tuple[list[int], bool]:
    """The original (slow, legacy) LLaMA tokenizer: split on special tokens, sentencepiece each piece.

    Returns the ids and whether some text piece starts with whitespace.
    """
    import re

    added = {t.content: t for t in tok.added_tokens_decoder.values() if t.special}
    specials = sorted(added, key=len, reverse=True)
    parts = [p for p in re.split("(" + "|".join(map(re.escape, specials)) + ")", text) if p]
    # an added token's rstrip / lstrip swallows the whitespace beside it (Phi-3's markers)
    for i, part in enumerate(parts):
        if part in added and added[part].rstrip and i + 1 < len(parts) and parts[i + 1] not in added:
            parts[i + 1] = parts[i + 1].lstrip()
        if part in added and added[part].lstrip and i > 0 and parts[i - 1] not in added:
            parts[i - 1] = parts[i - 1].rstrip()
    ids: list[int] = []
    ws_start = False
    for piece in parts:
        if not piece:
            continue
        if piece in specials:
            ids.append(tok.convert_tokens_to_ids(piece))
        else:
            ws_start = ws_start or piece[0].isspace()
            ids.extend(sp.encode(piece))
    return ids, ws_start


def long_ids(model_dir: Path, n: int = 250) -> list[int]:
    """~250 tokens of the bundled corpus: enough positions for an agreement percentage."""
    from transformers import AutoTokenizer

    text = (Path(__file__).parent / "data" / "tiny_corpus.txt").read_text(encoding="utf-8")
    return AutoTokenizer.from_pretrained(model_dir)(text).input_ids[:n]


def reference_ids(model_dir: Path, texts: list[str], add_special: bool) -> list[list[int]]:
    """HF's ids; for SentencePiece models, the original LLaMA tokenizer's.

    transformers 5 rebuilds LLaMA tokenizers with a Metaspace pre-tokenizer that skips
    the "▁" prefix when a piece of text already starts with a space; sentencepiece
    itself, the original LLaMA tokenizer and llama.cpp add it. For every other text
    HF must agree with that reference, which is checked here too.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    sp = None
    if (model_dir / "tokenizer.model").is_file():
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    out = []
    for t in texts:
        hf = tok(t, add_special_tokens=add_special).input_ids
        if sp is None:
            out.append(hf)
            continue
        ids, ws_start = _sp_legacy_ids(tok, sp, t)
        ids = ([tok.bos_token_id] if add_special else []) + ids
        if not ws_start:
            assert hf == ids, f"HF and sentencepiece disagree on {t!r}"
        out.append(ids)
    return out


def assert_same_tokens(model_dir: Path, gguf: Path) -> None:
    for add in (False, True):
        ref = reference_ids(model_dir, TEXTS, add)
        got = llama_tokenize(gguf, TEXTS, add_bos=add)
        bad = [(t, r, g) for t, r, g in zip(TEXTS, ref, got) if r != g]
        assert not bad, f"add_special={add}: {len(bad)} texts differ, first: {bad[0]!r}"


# --------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def tiny_sp_gguf(tiny_llama_sp_dir, tmp_path_factory) -> Path:
    return export(tiny_llama_sp_dir, tmp_path_factory.mktemp("sp") / "tiny-sp.f32.gguf", "f32")


def test_tiny_gguf_metadata(tiny_gguf):
    import gguf

    reader = gguf.GGUFReader(str(tiny_gguf))

    def s(key: str) -> str:
        f = reader.fields[key]
        return bytes(f.parts[f.data[0]]).decode()

    assert s("general.architecture") == "llama"
    assert s("tokenizer.ggml.model") == "gpt2"
    assert s("tokenizer.ggml.pre") == "smollm"  # Digits(individual) + ByteLevel, chosen by structure
    assert "<|im_start|>" in s("tokenizer.chat_template")
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "output_norm.weight", "blk.1.attn_k.weight"} <= names
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)


def test_tiny_bpe_tokenizes_like_hf(tiny_llama_dir, tiny_gguf):
    assert_same_tokens(tiny_llama_dir, tiny_gguf)


def test_tiny_sentencepiece_tokenizes_like_hf(tiny_llama_sp_dir, tiny_sp_gguf):
    assert_same_tokens(tiny_llama_sp_dir, tiny_sp_gguf)


@pytest.mark.parametrize("which", ["bpe", "sentencepiece"])
def test_tiny_f32_logits_match(which, tiny_llama_dir, tiny_gguf, tiny_llama_sp_dir, tiny_sp_gguf, record_property):
    model_dir, gguf = (tiny_llama_dir, tiny_gguf) if which == "bpe" else (tiny_llama_sp_dir, tiny_sp_gguf)
    ids = prompt_ids(model_dir)
    rel, agree = fidelity(gguf_logits(gguf, ids), hf_logits(model_dir, ids))
    report(record_property, f"tiny-{which} f32", rel, agree, len(ids))
    assert rel < 1e-3
    assert agree == 1.0


@pytest.mark.parametrize("quant", ["f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"])
def test_tiny_other_types(quant, tiny_llama_dir, tmp_path, record_property):
    import gguf

    out = export(tiny_llama_dir, tmp_path / f"tiny.{quant}.gguf", quant)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # temp files gone
    ids = long_ids(tiny_llama_dir)
    got, ref = gguf_logits(out, ids), hf_logits(tiny_llama_dir, ids)
    rel, agree = fidelity(got, ref)
    report(record_property, f"tiny-bpe {quant}", rel, agree, len(ids))
    assert np.isfinite(rel)
    types = {t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    if quant == "q8_0":
        assert "Q8_0" in types
        assert_q8_agreement(got, ref, agree)
    elif quant in ("f16", "bf16"):
        assert types == {quant.upper(), "F32"}  # 1-D norms stay f32
        assert agree >= 0.98
    else:
        assert agree >= 0.5  # K-quants on 64-wide rows fall back to legacy types; just sane


def test_adapter_export_equals_merged_model(tiny_llama_dir, tiny_lora_dir, tmp_path, record_property):
    out = export(tiny_llama_dir, tmp_path / "merged.gguf", "f32", adapter=tiny_lora_dir)
    ids = prompt_ids(tiny_llama_dir)
    merged = hf_logits(tiny_llama_dir, ids, adapter=tiny_lora_dir)
    base = hf_logits(tiny_llama_dir, ids)
    rel, agree = fidelity(gguf_logits(out, ids), merged)
    report(record_property, "tiny-bpe+lora f32", rel, agree, len(ids))
    assert rel < 1e-3 and agree == 1.0
    assert np.abs(merged - base).max() / np.abs(base).max() > 1e-2  # the adapter really changed the model


# --------------------------------------------------------------------------- refusals


def test_unsupported_architecture_names_supported_ones(tmp_path):
    import model_factory

    model = model_factory.build_unsupported_model(tmp_path / "gpt2")
    with pytest.raises(ExportError) as info:
        export(model, tmp_path / "x.gguf", "f16")
    msg = str(info.value)
    assert "GPT2LMHeadModel" in msg and all(a in msg for a in SUPPORTED_ARCHITECTURES)
    assert "\n" not in msg


def test_clear_errors_for_bad_input(tmp_path, tiny_llama_dir, tiny_lora_dir, tiny_gguf):
    cases = {
        "missing": (ExportConfig(model=tmp_path / "nope", out=tmp_path / "a.gguf"), "not found"),
        "no config": (ExportConfig(model=tmp_path, out=tmp_path / "a.gguf"), "no config.json"),
        "adapter as model": (ExportConfig(model=tiny_lora_dir, out=tmp_path / "a.gguf"), "LoRA adapter"),
        "gguf as model": (ExportConfig(model=tiny_gguf, out=tmp_path / "a.gguf"), "GGUF file already"),
        "bad quant": (ExportConfig(model=tiny_llama_dir, out=tmp_path / "a.gguf", quant="q3"), "q4_k_m"),
        "out exists": (ExportConfig(model=tiny_llama_dir, out=tiny_gguf), "already exists"),
        "out is dir": (ExportConfig(model=tiny_llama_dir, out=tmp_path), "is a folder"),
        "bad adapter": (ExportConfig(model=tiny_llama_dir, out=tmp_path / "a.gguf", adapter=tmp_path), "not a LoRA"),
    }
    for label, (config, needle) in cases.items():
        with pytest.raises(ExportError) as info:
            export_gguf(config)
        assert needle in str(info.value), label
        assert "\n" not in str(info.value), label


def test_pickle_only_weights_are_refused(tmp_path, tiny_llama_dir):
    model = tmp_path / "pickled"
    model.mkdir()
    (model / "config.json").write_text((tiny_llama_dir / "config.json").read_text())
    (model / "pytorch_model.bin").write_bytes(b"not loaded, never")
    with pytest.raises(ExportError, match="pickle"):
        export(model, tmp_path / "x.gguf", "f16")


def test_disk_full_removes_partial_file(tmp_path, tiny_llama_dir, monkeypatch):
    import gguf

    calls = {"n": 0}
    real = gguf.GGUFWriter.write_tensor_data

    def failing(self, tensor, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, tensor, *a, **kw)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", failing)
    out_dir = tmp_path / "out"
    for quant in ("f16", "q8_0"):
        calls["n"] = 0
        with pytest.raises(ExportError, match="Not enough disk space") as info:
            export(tiny_llama_dir, out_dir / f"x.{quant}.gguf", quant)
        assert "\n" not in str(info.value)
        assert list(out_dir.iterdir()) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path, tiny_llama_dir, monkeypatch):
    import shutil as shutil_mod

    from trainer import export as export_mod

    monkeypatch.setattr(export_mod.shutil, "disk_usage", lambda p: shutil_mod._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(ExportError, match="Not enough disk space"):
        export(tiny_llama_dir, tmp_path / "x.gguf", "f32")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_existing(tmp_path, tiny_llama_dir):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"old")
    export(tiny_llama_dir, out, "f16", overwrite=True)
    assert out.read_bytes()[:4] == b"GGUF"


def test_config_fields_have_help():
    help_text = ExportConfig.field_help()
    assert set(help_text) == {"model", "out", "quant", "adapter", "overwrite", "verify"}
    assert all(help_text.values())


# --------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "medalpaca_desktop.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_export_jsonl(tmp_path, tiny_llama_dir):
    out = tmp_path / "cli.gguf"
    proc = _cli("export", "--model", str(tiny_llama_dir), "--out", str(out), "--quant", "q8_0", "--jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    events = [parse_line(ln) for ln in lines]
    assert all(e is not None for e in events), lines  # stdout carries events only
    types = [e.type for e in events]
    assert types[0] == "started" and types[-2:] == ["result", "done"]
    progress = [e for e in events if e.type == "progress" and e.stage == "Writing tensors"]
    assert progress and progress[-1].current == progress[-1].total
    quantizing = [e for e in events if e.type == "progress" and e.stage == "Quantizing to q8_0"]
    assert quantizing and quantizing[-1].current == quantizing[-1].total == progress[-1].total
    assert any(e.message.endswith(".weight") for e in quantizing)  # llama.cpp's per-tensor lines drive it
    assert "falling back" not in proc.stdout
    assert events[-1].ok and events[-2].data["path"] == str(out)
    assert out.read_bytes()[:4] == b"GGUF"


def test_cli_export_human_and_errors(tmp_path, tiny_llama_dir):
    out = tmp_path / "cli.gguf"
    proc = _cli("export", "--model", str(tiny_llama_dir), "--out", str(out), "--quant", "f16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Writing tensors" in proc.stderr and "ETA" in proc.stderr
    assert f"Wrote {out}" in proc.stdout
    again = _cli("export", "--model", str(tiny_llama_dir), "--out", str(out))
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("medalpaca: error:") and "--force" in again.stderr
    jsonl = _cli("export", "--model", str(tmp_path / "missing"), "--out", str(out), "--jsonl")
    assert jsonl.returncode == 2
    events = [parse_line(ln) for ln in jsonl.stdout.splitlines() if ln.strip()]
    assert [e.type for e in events] == ["started", "error", "done"] and not events[-1].ok


# --------------------------------------------------------------------------- gguf import


def test_import_refuses_non_gguf(tmp_path):
    from trainer.gguf_import import GGUFImportError, dequantize_gguf_to_hf

    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(GGUFImportError, match="not a GGUF file"):
        dequantize_gguf_to_hf(bad, tmp_path / "out")


def test_import_refuses_unsupported_architecture(tmp_path):
    import gguf

    from trainer.gguf_import import GGUFImportError, dequantize_gguf_to_hf

    path = tmp_path / "rwkv.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv6")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFImportError, match="cannot be converted") as info:
        dequantize_gguf_to_hf(path, tmp_path / "out")
    assert "llama" in str(info.value)


# --------------------------------------------------------------------------- demo model (real SmolLM2-135M)


@pytest.fixture(scope="module")
def demo_exports(demo_hf_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("demo_export")
    return {q: export(demo_hf_dir, out / f"smollm2.{q}.gguf", q) for q in ("f32", "q8_0")}


def test_demo_hf_dir_is_a_plain_model(demo_hf_dir):
    cfg = json.loads((demo_hf_dir / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (demo_hf_dir / "model.safetensors").is_file() and (demo_hf_dir / "tokenizer.json").is_file()


def test_demo_tokenizer_matches_original_gguf(demo_hf_dir, demo_gguf):
    """The de-quantized HF tokenizer reproduces the shipped GGUF's own tokenization."""
    assert_same_tokens(demo_hf_dir, demo_gguf)


def test_demo_export_tokenizes_like_hf(demo_hf_dir, demo_exports):
    assert_same_tokens(demo_hf_dir, demo_exports["f32"])


def test_demo_export_logits(demo_hf_dir, demo_gguf, demo_exports, record_property):
    ids = prompt_ids(demo_hf_dir)
    ref = hf_logits(demo_hf_dir, ids)
    rel, agree = fidelity(gguf_logits(demo_exports["f32"], ids), ref)
    report(record_property, "demo SmolLM2-135M f32", rel, agree, len(ids))
    assert rel < 1e-3 and agree == 1.0
    ids = long_ids(demo_hf_dir)
    ref = hf_logits(demo_hf_dir, ids)
    got8 = gguf_logits(demo_exports["q8_0"], ids)
    rel8, agree8 = fidelity(got8, ref)
    report(record_property, "demo SmolLM2-135M q8_0", rel8, agree8, len(ids))
    _, agree_shipped = fidelity(gguf_logits(demo_gguf, ids), ref)
    report(record_property, "demo shipped Q4_1 (same weights)", None, agree_shipped, len(ids))
    assert_q8_agreement(got8, ref, agree8)


# --------------------------------------------------------------------------- q8_0 weights


def test_q8_0_weights_are_within_half_a_step(tiny_llama_dir, tmp_path):
    """The q8_0 file holds the model's own weights, each within half a quantization step.

    Independent of llama.cpp's compute: de-quantized with the gguf package and compared
    with the safetensors weights block by block (32 values share one f16 scale).
    """
    import gguf
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    out = export(tiny_llama_dir, tmp_path / "tiny.q8_0.gguf", "q8_0")
    original = load_file(str(tiny_llama_dir / "model.safetensors"))
    names = {"blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
             "blk.1.ffn_gate.weight": "model.layers.1.mlp.gate_proj.weight",
             "blk.1.attn_v.weight": "model.layers.1.self_attn.v_proj.weight"}
    tensors = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    for gguf_name, hf_name in names.items():
        t = tensors[gguf_name]
        assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0, gguf_name
        ref = original[hf_name].astype(np.float32)
        got = dequantize(t.data, t.tensor_type).reshape(ref.shape)
        blocks_ref = ref.reshape(-1, 32)
        step = np.abs(blocks_ref).max(axis=1, keepdims=True) / 127
        err = np.abs(got.reshape(-1, 32) - blocks_ref)
        assert (err <= 0.6 * step + 1e-12).all(), gguf_name
