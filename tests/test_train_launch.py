"""The `accelerate launch` command lines: DDP, FSDP for full fine-tunes on GPUs, gloo on a CPU.

Command building only; nothing is launched and no GPU is needed (the GPU fact is a parameter).
"""

from __future__ import annotations

import json

from trainer.launch import LaunchOptions, decoder_layer_class, launch_command

FSDP_FLAGS = ("--use_fsdp", "--fsdp_sharding_strategy", "--fsdp_auto_wrap_policy",
              "--fsdp_transformer_layer_cls_to_wrap")


def _value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_full_fine_tune_on_four_gpus_uses_fsdp_full_shard_per_decoder_layer():
    cmd = launch_command("cfg.yaml", [], False, LaunchOptions(4), method="full", has_gpu=True,
                         layer_cls="LlamaDecoderLayer")
    assert all(flag in cmd for flag in FSDP_FLAGS)
    assert _value(cmd, "--fsdp_sharding_strategy") == "FULL_SHARD"
    assert _value(cmd, "--fsdp_auto_wrap_policy") == "TRANSFORMER_BASED_WRAP"
    assert _value(cmd, "--fsdp_transformer_layer_cls_to_wrap") == "LlamaDecoderLayer"
    assert _value(cmd, "--num_processes") == "4"
    assert "--multi_gpu" not in cmd  # accelerate refuses --multi_gpu together with --use_fsdp
    assert cmd[-3:] == ["trainer", "run", "cfg.yaml"]


def test_fsdp_without_a_known_layer_class_leaves_the_choice_to_accelerate():
    cmd = launch_command("cfg.yaml", [], False, LaunchOptions(2), method="full", has_gpu=True)
    assert "--use_fsdp" in cmd and "--fsdp_transformer_layer_cls_to_wrap" not in cmd


def test_lora_on_two_gpus_stays_ddp():
    cmd = launch_command("cfg.yaml", [], False, LaunchOptions(2), method="lora", has_gpu=True)
    assert "--multi_gpu" in cmd
    assert not any(arg.startswith("--fsdp") or arg == "--use_fsdp" for arg in cmd)


def test_cpu_only_machine_keeps_ddp_over_gloo_even_for_full():
    for method in ("full", "lora"):
        cmd = launch_command("cfg.yaml", [], False, LaunchOptions(2), method=method, has_gpu=False)
        assert "--multi_gpu" in cmd and "--cpu" not in cmd  # --cpu would start only one process
        assert not any(arg.startswith("--fsdp") or arg == "--use_fsdp" for arg in cmd)
        assert _value(cmd, "--num_processes") == "2"


def test_one_process_is_neither_ddp_nor_fsdp():
    cmd = launch_command("cfg.yaml", [], False, LaunchOptions(1), method="full", has_gpu=True)
    assert "--multi_gpu" not in cmd and "--use_fsdp" not in cmd


def test_multi_machine_flags_pass_through_with_fsdp():
    cmd = launch_command("cfg.yaml", ["max_steps=2"], True, LaunchOptions(4, 2, 1, "10.0.0.1", 29600),
                         method="full", has_gpu=True, layer_cls="LlamaDecoderLayer")
    assert "--use_fsdp" in cmd
    assert _value(cmd, "--num_processes") == "8" and _value(cmd, "--num_machines") == "2"
    assert _value(cmd, "--machine_rank") == "1" and _value(cmd, "--main_process_ip") == "10.0.0.1"
    assert _value(cmd, "--main_process_port") == "29600"
    assert cmd[-6:] == ["trainer", "run", "cfg.yaml", "--set", "max_steps=2", "--resume"]


def test_multi_machine_flags_pass_through_with_ddp():
    cmd = launch_command("cfg.yaml", [], False, LaunchOptions(2, 3, 2, "10.0.0.9", 29555), method="lora",
                         has_gpu=True)
    assert "--multi_gpu" in cmd and "--use_fsdp" not in cmd
    assert _value(cmd, "--num_processes") == "6" and _value(cmd, "--machine_rank") == "2"
    assert _value(cmd, "--main_process_ip") == "10.0.0.9" and _value(cmd, "--main_process_port") == "29555"


def test_fsdp_flags_are_ones_accelerate_launch_accepts():
    from accelerate.commands.launch import launch_command_parser

    cmd = launch_command("cfg.yaml", [], False, LaunchOptions(4), method="full", has_gpu=True,
                         layer_cls="LlamaDecoderLayer")
    args = launch_command_parser().parse_args(cmd[3:])
    assert args.use_fsdp and not args.multi_gpu
    assert args.fsdp_sharding_strategy == "FULL_SHARD"
    assert args.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP"
    assert args.fsdp_transformer_layer_cls_to_wrap == "LlamaDecoderLayer"


def test_decoder_layer_class_from_the_model_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}), encoding="utf-8")
    assert decoder_layer_class(tmp_path) == "LlamaDecoderLayer"
    assert decoder_layer_class(tmp_path / "missing") is None


def test_launch_reads_method_gpu_and_layer_class_from_the_config(tmp_path, monkeypatch, tiny_llama_dir):
    import torch

    from trainer.launch import _strategy_facts

    model = tiny_llama_dir
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"base_model: {model}\nmethod: full\ndata: [d.jsonl]\noutput_dir: {tmp_path / 'run'}\n",
                   encoding="utf-8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _strategy_facts(cfg, ["num_processes=4"]) == ("full", True, "LlamaDecoderLayer")
    assert _strategy_facts(cfg, ["method=lora"]) == ("lora", True, None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _strategy_facts(cfg, []) == ("full", False, None)
