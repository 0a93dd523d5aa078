"""The whole loop on every architecture family: fine-tune (each method), chat, benchmark, merge, GGUF.

One tiny seeded model per family (tests/model_factory.py FAMILIES). The LoRA run goes all
the way: its adapter is exported merged to GGUF, llama.cpp answers a chat prompt with the
same greedy tokens as transformers with the adapter, and the benchmark check scores the
same questions on both with the same answers. The other methods train two steps each and
leave a model that loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import model_factory
import pytest
from test_train_run import make_config, run, write_records

from medalpaca_desktop.core.chat_protocol import LoadSpec, SamplingSettings

ROOT = Path(__file__).resolve().parents[1]
MEDQA = ROOT / "resources" / "sample_questions" / "medqa_sample.jsonl"
FAMILIES = [f for f in model_factory.FAMILIES if f not in ("llama", "llama2")]  # LLaMA: the rest of the suite


def targets(folder: Path) -> list[str]:
    """Phi-3 fuses q/k/v into one projection; the rest have q_proj and v_proj."""
    arch = json.loads((folder / "config.json").read_text())["architectures"][0]
    return ["qkv_proj"] if arch.startswith("Phi3") else ["q_proj", "v_proj"]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loop_families")
    return {f: model_factory.build_tiny_model(root / f, f) for f in FAMILIES}


def answer(backend, prompt_ids: list[int], n: int = 8) -> int:
    """A greedy answer through the app's backend; its token count."""
    stats = backend.generate(prompt_ids, SamplingSettings(temperature=0, max_tokens=n), lambda _: None,
                             lambda: False)
    return stats.completion_tokens


def greedy_ids(base: Path, adapter: Path, gguf: Path, ids: list[int], n: int = 8) -> tuple[list[int], list[int]]:
    """The greedy tokens of transformers (with the adapter) and of llama.cpp (the merged export).

    Compared as ids: a random model's text is often invalid UTF-8, which the two decoders spell differently."""
    import torch
    from llama_cpp import Llama
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    with torch.no_grad():
        hf = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)[0][len(ids):].tolist()
    llm = Llama(str(gguf), verbose=False, n_ctx=256, type_k=0, type_v=0)  # f32 KV cache
    try:
        cpp: list[int] = []
        for token in llm.generate(ids, temp=0, top_k=1):
            if llm.token_eos() == token or len(cpp) == len(hf):
                break
            cpp.append(token)
    finally:
        llm.close()
    return hf, cpp


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_fine_tune_chat_benchmark_and_gguf(family, family_dirs, tmp_path):
    from transformers import AutoTokenizer

    from bench.verify import verify
    from medalpaca_desktop.inference.hf import HFBackend
    from medalpaca_desktop.inference.llamacpp import LlamaCppBackend
    from trainer.export import ExportConfig, export_gguf

    base = family_dirs[family]
    cfg = make_config(base, tmp_path / "run", write_records(tmp_path), method="lora", lora_target_modules=targets(base),
                      max_steps=2, learning_rate=5e-2)
    rc, rec = run(cfg)
    assert rc == 0, [e.to_dict() for e in rec.of("error")]
    adapter = Path(rec.events[-1].data["final"])
    assert (adapter / "adapter_config.json").is_file()

    gguf = export_gguf(ExportConfig(model=base, adapter=adapter, out=tmp_path / f"{family}.gguf", quant="f32"))

    tok = AutoTokenizer.from_pretrained(base)
    chat = tok.apply_chat_template([{"role": "user", "content": "Which vitamin deficiency causes scurvy?"}],
                                   tokenize=False, add_generation_prompt=True)
    hf = HFBackend()
    hf.load(LoadSpec(model=str(base), adapter=str(adapter)), lambda *_: None)
    cpp = LlamaCppBackend()
    cpp.load(LoadSpec(model=str(gguf)), lambda *_: None)
    try:
        ids = hf.tokenize(chat, add_special=False)
        assert cpp.tokenize(chat, add_special=False) == ids
        assert answer(hf, ids) >= 1 and answer(cpp, ids) >= 1
    finally:
        hf.unload()
        cpp.unload()
    by_hf, by_cpp = greedy_ids(base, adapter, gguf, ids)
    assert by_cpp == by_hf

    checked = verify(str(base), str(gguf), str(MEDQA), 6, tmp_path / "check", reference_adapter=str(adapter))
    assert checked["n_shared"] == 6 and checked["acc_a"] == checked["acc_b"]
    assert not checked["significantly_worse"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["full", "lora-8bit", "qlora"])
def test_other_methods_train_each_family(method, family, family_dirs, tmp_path):
    base = family_dirs[family]
    mods = ["all-linear"] if method == "qlora" else targets(base)
    cfg = make_config(base, tmp_path / "run", write_records(tmp_path), method=method, lora_target_modules=mods,
                      max_steps=1)
    rc, rec = run(cfg)
    assert rc == 0, [e.to_dict() for e in rec.of("error")]
    final = Path(rec.events[-1].data["final"])
    assert (final / ("config.json" if method == "full" else "adapter_config.json")).is_file()
