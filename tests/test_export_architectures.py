"""Every architecture family of the loop exports to a GGUF that llama.cpp runs as transformers does.

One tiny seeded model per family (tests/model_factory.py FAMILIES): the export must
tokenize like Hugging Face (chat markers included), give the same f32 logits, and keep
the argmax at q8_0. Byte-for-byte agreement with llama.cpp's own converter is
perf/export_vs_llamacpp.py's job (it needs the llama-cpp-python sdist).
"""

from __future__ import annotations

from pathlib import Path

import model_factory
import numpy as np
import pytest
from test_export import (
    Q8_MIN_DECISIVE_AGREEMENT,
    assert_same_tokens,
    decisive_agreement,
    export,
    fidelity,
    gguf_logits,
    hf_logits,
    long_ids,
    prompt_ids,
    report,
)

from trainer import _gguf_tensors
from trainer.export import SUPPORTED_ARCHITECTURES

FAMILIES = [f for f in model_factory.FAMILIES if f not in ("llama", "llama2")]  # those two: test_export.py


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {f: model_factory.build_tiny_model(root / f, f) for f in FAMILIES}


@pytest.fixture(scope="module")
def family_ggufs(family_dirs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family_ggufs")
    return {f: export(d, root / f"{f}.f32.gguf", "f32") for f, d in family_dirs.items()}


def test_supported_list_is_the_exporters_table():
    assert set(SUPPORTED_ARCHITECTURES) == set(_gguf_tensors.ARCHITECTURES)


def test_every_family_is_an_exported_architecture(family_dirs):
    import json

    archs = {json.loads((d / "config.json").read_text())["architectures"][0] for d in family_dirs.values()}
    assert archs == set(SUPPORTED_ARCHITECTURES)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_tokenizes_like_hf(family, family_dirs, family_ggufs):
    assert_same_tokens(family_dirs[family], family_ggufs[family])


@pytest.mark.parametrize("family", FAMILIES)
def test_family_f32_logits_match(family, family_dirs, family_ggufs, record_property):
    ids = long_ids(family_dirs[family], 120)
    rel, agree = fidelity(gguf_logits(family_ggufs[family], ids), hf_logits(family_dirs[family], ids))
    report(record_property, f"tiny-{family} f32", rel, agree, len(ids))
    assert rel < 1e-3
    assert agree == 1.0


@pytest.mark.parametrize("family", FAMILIES)
def test_family_q8_0_keeps_the_argmax(family, family_dirs, tmp_path, record_property):
    out = export(family_dirs[family], tmp_path / f"{family}.q8_0.gguf", "q8_0")
    ids = long_ids(family_dirs[family])
    got, ref = gguf_logits(out, ids), hf_logits(family_dirs[family], ids)
    rel, agree = fidelity(got, ref)
    report(record_property, f"tiny-{family} q8_0", rel, agree, len(ids))
    assert np.isfinite(rel)
    decisive, count = decisive_agreement(got, ref)
    assert count >= len(ref) // 5, "too few decisive positions to judge"
    assert decisive >= Q8_MIN_DECISIVE_AGREEMENT
    assert agree >= 0.9  # random tiny models have many near-ties; the decisive positions are the measure


def test_llama3_rope_scaling_reaches_llama_cpp(family_dirs, family_ggufs):
    """The rope_freqs tensor is what makes long positions right: past the original context the
    unscaled RoPE of a plain LLaMA export would differ, the scaled one must not."""
    import gguf

    names = {t.name for t in gguf.GGUFReader(str(family_ggufs["llama3"])).tensors}
    assert "rope_freqs.weight" in names
    ids = long_ids(family_dirs["llama3"], 200)  # > original_max_position_embeddings (64)
    rel, agree = fidelity(gguf_logits(family_ggufs["llama3"], ids), hf_logits(family_dirs["llama3"], ids))
    assert rel < 1e-3 and agree == 1.0


def test_prompt_fits_each_family(family_dirs):
    for d in family_dirs.values():
        assert prompt_ids(d)
