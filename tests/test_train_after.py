"""After-training steps (trainer/after.py): model card, template metadata, merge, GGUF export + check.

Tiny LLaMA on the CPU, a few LoRA / QLoRA steps, then the steps the config asks for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.test_train_run import Recorder, make_config, write_records


def _run(cfg):
    from trainer.run import run_job

    rec = Recorder()
    rc = run_job(cfg, writer=rec)
    return rc, rec


def _logits(model, ids: list[int]) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def _gguf_logits(gguf: Path, ids: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(str(gguf), logits_all=True, n_ctx=max(64, len(ids) + 8), n_threads=2, type_k=0, type_v=0,
                verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def test_medalpaca_chat_template_renders_like_the_chat_tab():
    from medalpaca_desktop.core.chat_protocol import ChatMessage
    from medalpaca_desktop.core.prompts import render_chat_template, render_medalpaca
    from trainer.after import medalpaca_chat_template

    tpl = medalpaca_chat_template()
    one = [ChatMessage("user", "Which organ produces insulin?")]
    assert render_chat_template(tpl, one, "<s>", "</s>", add_generation_prompt=True) == render_medalpaca(one)
    two = [*one, ChatMessage("assistant", "The pancreas."), ChatMessage("user", "And glucagon?")]
    got = render_chat_template(tpl, two, "<s>", "</s>", add_generation_prompt=True)
    assert got.replace("The pancreas.</s>", "The pancreas.") == render_medalpaca(two)
    sys_ = [ChatMessage("system", "Be brief."), *one]
    assert render_chat_template(tpl, sys_, "", "", add_generation_prompt=True) == render_medalpaca(sys_)


def test_export_after_training_loads_in_llama_cpp(tiny_llama_dir, tmp_path):
    """LoRA + merge_adapter + export_gguf f16: card, template files, merged model, GGUF checked."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.model_card import read_card_metadata

    run_dir = tmp_path / "run"
    cfg = make_config(tiny_llama_dir, run_dir, write_records(tmp_path), merge_adapter=True, export_gguf="f16")
    rc, rec = _run(cfg)
    assert rc == 0, [e.to_dict() for e in rec.of("error")]
    assert not rec.of("error")
    done = rec.events[-1]
    assert done.type == "done" and done.ok
    stages = [e.stage for e in rec.of("progress")]
    for stage in ("Writing model card", "Merging adapter", "Exporting GGUF", "Checking GGUF"):
        assert stage in stages
    assert stages.index("Writing model card") < stages.index("Merging adapter") < stages.index("Exporting GGUF")

    final, merged = run_dir / "final", run_dir / "merged"
    assert (final / "adapter_config.json").is_file()  # the adapter is kept
    meta = read_card_metadata(final)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert meta["medalpaca"]["template"] == "medalpaca" and meta["medalpaca"]["eos_token"] == tok.eos_token
    card = (final / "README.md").read_text(encoding="utf-8")
    assert "## Training" in card and "Final training loss" in card and "Training loss over the run" in card
    tmpl = json.loads((final / "medalpaca_template.json").read_text(encoding="utf-8"))
    assert tmpl["template"] == "medalpaca" and tmpl["eos_token"] == tok.eos_token
    tok_cfg = json.loads((merged / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tok_cfg["medalpaca_template"] == "medalpaca" and "### Response:" in tok_cfg["chat_template"]
    assert (merged / "README.md").is_file()

    # merged/ equals base + adapter merged in memory
    ids = tok("### Instruction:\nWhat does HbA1c measure?\n### Response:\n")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    want = _logits(PeftModel.from_pretrained(base, final).merge_and_unload(), ids)
    got = _logits(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32), ids)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    plain = _logits(AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32), ids)
    assert np.abs(plain - want).max() > 1e-4  # the adapter changed something

    gguf = Path(done.data["gguf"])
    assert gguf == run_dir / "run-f16.gguf" and gguf.is_file()
    check = done.data["gguf_check"]
    assert check["rel_diff"] < 1e-2 and check["argmax_agreement"] >= 0.95, check
    assert any("gguf_rel_diff" in e.values for e in rec.of("metric"))
    assert any("gguf" in e.data for e in rec.of("result"))
    assert str(gguf) in done.data["gguf_note"]
    # our own comparison, independent of the run's
    g = _gguf_logits(gguf, ids)
    rel = float(np.abs(g - want).max() / np.abs(want).max())
    assert rel < 1e-2 and float((g.argmax(-1) == want.argmax(-1)).mean()) >= 0.95

    from llama_cpp import Llama

    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        assert "### Response:" in llm.metadata.get("tokenizer.chat_template", "")
        assert llm.metadata.get("medalpaca.template") == "medalpaca"  # the training format travels
        assert llm.metadata.get("medalpaca.eos_token")
    finally:
        llm.close()
    assert not list(run_dir.glob(".merge*")) and not list(run_dir.glob(".merged*"))


def test_qlora_merges_into_full_precision_base(tiny_llama_dir, tmp_path):
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    cfg = make_config(tiny_llama_dir, run_dir, write_records(tmp_path), method="qlora",
                      lora_target_modules=["all-linear"], merge_adapter=True, max_steps=2)
    rc, rec = _run(cfg)
    assert rc == 0 and not rec.of("error"), [e.to_dict() for e in rec.of("error")]
    merged = Path(rec.events[-1].data["merged"])
    assert "quantization_config" not in json.loads((merged / "config.json").read_text(encoding="utf-8"))
    model = AutoModelForCausalLM.from_pretrained(merged)
    types = {type(m) for m in model.modules()}
    assert not types & {bnb.nn.Linear8bitLt, bnb.nn.Linear4bit}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not hasattr(model, "peft_config")


def test_failed_export_keeps_final_and_reports(tiny_llama_dir, tmp_path, monkeypatch):
    import trainer.export

    def broken(*args, **kwargs):
        raise trainer.export.ExportError("disk on fire")

    monkeypatch.setattr(trainer.export, "export_gguf", broken)
    run_dir = tmp_path / "run"
    cfg = make_config(tiny_llama_dir, run_dir, write_records(tmp_path), export_gguf="f16", max_steps=1)
    rc, rec = _run(cfg)
    assert rc == 0
    errors = rec.of("error")
    assert len(errors) == 1 and errors[0].kind == "export" and "disk on fire" in errors[0].message
    done = rec.events[-1]
    assert done.ok and done.data["after_errors"] and "gguf" not in done.data
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()
    assert (run_dir / "final" / "README.md").is_file()
    assert not list(run_dir.glob("*.gguf")) and not list(run_dir.glob(".merge*"))
    assert not (run_dir / "merged").exists()  # merge_adapter off: the temporary merge is gone
