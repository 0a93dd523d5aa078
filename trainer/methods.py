"""Model loading per training method: full, lora, lora-8bit, qlora.

One place decides dtypes and quantization so the job (run.py) stays method-agnostic.
Why the dtype rules: a full fine-tune in pure fp16 cannot be trained (the grad scaler
refuses fp16 master weights), so fp16 means fp32 weights + fp16 autocast; bf16 weights
train fine; the CPU gets fp32 unless the config asks otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from medalpaca_desktop.core.devices import cpu_native_bf16
from trainer.config import TrainConfig


@dataclass
class Precision:
    """What the model is loaded in and which autocast the Trainer uses."""

    load_dtype: torch.dtype
    compute_dtype: torch.dtype
    bf16: bool = False
    fp16: bool = False

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.compute_dtype, "fp32")


@dataclass
class TrainingModel:
    """The model ready for the Trainer (adapters wrapped), its precision and what the run reports."""

    model: Any
    precision: Precision
    info: dict[str, Any] = field(default_factory=dict)


def device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(config: TrainConfig, device: str) -> Precision:
    """config.precision + device -> load dtype and autocast flags."""
    choice = config.precision
    if choice == "auto":
        if device == "cuda":
            choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            choice = "bf16" if cpu_native_bf16() else "fp32"
    if choice == "bf16" and device != "cuda" and config.method == "full":
        return Precision(torch.float32, torch.bfloat16, bf16=True)  # fp32 master weights, bf16 autocast
    if choice == "bf16":
        return Precision(torch.bfloat16, torch.bfloat16, bf16=True)
    if choice == "fp16":
        if device != "cuda":  # fp16 autocast needs a GPU; the CPU trains in fp32
            return Precision(torch.float32, torch.float32)
        # full: fp32 master weights + autocast; adapters: frozen fp16 base is fine
        load = torch.float32 if config.method == "full" else torch.float16
        return Precision(load, torch.float16, fp16=True)
    return Precision(torch.float32, torch.float32)


def _process_device(device: str) -> str:
    """This process's device: its own GPU under a launcher (LOCAL_RANK), else the CPU."""
    import os

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if device == "cuda" else "cpu"


#: method -> how the base is loaded (inference.hf_model.quantization_config builds the config).
LOAD_IN = {"lora-8bit": "8bit", "qlora": "4bit"}


def lora_targets(config: TrainConfig) -> str | list[str]:
    """peft wants the string 'all-linear', not a list holding it."""
    mods = list(config.lora_target_modules)
    return "all-linear" if "all-linear" in mods else mods


def load_model(config: TrainConfig, model_dir: str, device: str | None = None) -> TrainingModel:
    """Load the base for `config.method`, wrap adapters, and count parameters."""
    from medalpaca_desktop.inference.hf_model import load_causal_lm

    device = device or device_type()
    precision = resolve_precision(config, device)
    load_in = LOAD_IN.get(config.method, "none")
    # A quantized base is placed by bitsandbytes at load; a full-precision one is moved by the Trainer.
    model = load_causal_lm(model_dir, dtype=precision.load_dtype, compute_dtype=precision.compute_dtype,
                           load_in=load_in, device=_process_device(device) if load_in != "none" else None).model
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing

    if config.is_adapter_method:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if load_in != "none":
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=config.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=lora_targets(config), bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        trainable, total = model.get_nb_trainable_parameters()
    else:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info = {
        "method": config.method,
        "device": device,
        "precision": precision.name,
        "parameters": int(total),
        "trainable_parameters": int(trainable),
        "trainable_share": round(trainable / total, 6) if total else 0.0,
        "quantization": {"lora-8bit": "int8", "qlora": "nf4 (double quant)"}.get(config.method),
    }
    return TrainingModel(model=model, precision=precision, info=info)
