"""TrainConfig: YAML round trip, one-line errors naming the field, presets from the paper."""

from __future__ import annotations

from importlib import resources as ir

import pytest
import yaml

from trainer.config import ConfigError, TrainConfig

REQUIRED = ["base_model=/models/llama", "data=[train.jsonl]", "output_dir=/runs/r1"]


def preset_paths():
    return sorted(p for p in ir.files("resources").joinpath("presets").iterdir() if p.name.endswith(".yaml"))


@pytest.mark.parametrize("preset", preset_paths(), ids=lambda p: p.name)
def test_every_preset_loads_validates_and_names_its_source(preset, tmp_path):
    text = preset.read_text(encoding="utf-8")
    assert yaml.safe_load(text)["preset_source"]
    path = tmp_path / preset.name
    path.write_text(text)
    cfg = TrainConfig.load(path, REQUIRED)
    assert cfg.max_length == 256 and cfg.val_split == 0.1 and cfg.seed == 42 and cfg.global_batch_size == 128


def test_paper_lora_preset_has_the_repository_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(ir.files("resources").joinpath("presets", "medalpaca-lora-8bit.yaml").read_text())
    cfg = TrainConfig.load(path, REQUIRED)
    assert (cfg.method, cfg.learning_rate, cfg.epochs, cfg.warmup_steps, cfg.lr_scheduler) == (
        "lora-8bit", 2e-5, 3.0, 100, "cosine")
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules) == (8, 16, 0.1, ["q_proj", "v_proj"])
    assert cfg.gradient_accumulation() == 64  # 128 / (2 x 1)
    assert cfg.gradient_accumulation(processes=4) == 16


def test_round_trip_and_overrides(tmp_path):
    cfg = TrainConfig(base_model="/m", data=["a.jsonl", "b.csv"], output_dir=str(tmp_path / "run"), method="qlora",
                      lora_target_modules=["all-linear"], max_steps=30)
    path = cfg.save(tmp_path / "cfg.yaml")
    assert TrainConfig.load(path) == cfg
    again = TrainConfig.load(path, ["max_steps=5", "learning_rate=1e-4", "train_on_inputs=true"])
    assert (again.max_steps, again.learning_rate, again.train_on_inputs) == (5, 1e-4, True)


@pytest.mark.parametrize("override, field", [
    ("method=sgd", "method"),
    ("learning_rate=abc", "learning_rate"),
    ("lora_r=0", "lora_r"),
    ("val_split=0.9", "val_split"),
    ("micro_batch_size=2.5", "micro_batch_size"),
    ("bogus_key=1", "bogus_key"),
    ("data=[]", "data"),
    ("global_batch_size=1", "global_batch_size"),
    ("data_weights=[1, 2, 3]", "data_weights"),
    ("export_gguf=q3", "export_gguf"),
    ("train_on_inputs=maybe", "train_on_inputs"),
])
def test_bad_values_give_one_line_naming_the_field(override, field, tmp_path):
    path = TrainConfig(base_model="/m", data=["a.jsonl"], output_dir="/r").save(tmp_path / "c.yaml")
    with pytest.raises(ConfigError) as info:
        TrainConfig.load(path, [override])
    message = str(info.value)
    assert message.startswith(field) and "\n" not in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        TrainConfig.load(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [lora\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.load(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.load(bad)


def test_field_help_for_tooltips():
    assert "LoRA rank" in TrainConfig.field_help("lora_r")
    assert "gradient accumulation" in TrainConfig.field_help("global_batch_size")


def test_cpu_bf16_is_read_from_the_kernels_flags(tmp_path):
    from medalpaca_desktop.core.devices import cpu_native_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_native_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not cpu_native_bf16(info)
    assert not cpu_native_bf16(tmp_path / "missing")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_a_cpu_follows_its_bf16(native, monkeypatch):
    import torch

    import trainer.methods as methods
    from trainer.config import TrainConfig

    monkeypatch.setattr(methods, "cpu_native_bf16", lambda: native)
    lora = TrainConfig(base_model="m", method="lora", data=["d.jsonl"], output_dir="o")
    full = TrainConfig(base_model="m", method="full", data=["d.jsonl"], output_dir="o")
    got = methods.resolve_precision(lora, "cpu")
    assert got.name == ("bf16" if native else "fp32") and got.bf16 == native
    assert methods.resolve_precision(full, "cpu").load_dtype == torch.float32  # full keeps fp32 master weights
    fp32 = TrainConfig(base_model="m", method="lora", data=["d.jsonl"], output_dir="o", precision="fp32")
    assert methods.resolve_precision(fp32, "cpu").name == "fp32"  # one setting away
