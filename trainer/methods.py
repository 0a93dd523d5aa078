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
class LoadedModel:
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
            choice = "fp32"
    if choice == "bf16":
        return Precision(torch.bfloat16, torch.bfloat16, bf16=True)
    if choice == "fp16":
        if device != "cuda":  # fp16 autocast needs a GPU; the CPU trains in fp32
            return Precision(torch.float32, torch.float32)
        # full: fp32 master weights + autocast; adapters: frozen fp16 base is fine
        load = torch.float32 if config.method == "full" else torch.float16
        return Precision(load, torch.float16, fp16=True)
    return Precision(torch.float32, torch.float32)


def _device_map(device: str) -> dict[str, Any]:
    import os

    if device == "cuda":
        return {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return {"": "cpu"}


def _quantization(config: TrainConfig, precision: Precision) -> Any:
    from transformers import BitsAndBytesConfig

    if config.method == "lora-8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if config.method == "qlora":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=precision.compute_dtype,
                                  bnb_4bit_quant_storage=torch.uint8)
    return None


def lora_targets(config: TrainConfig) -> str | list[str]:
    """peft wants the string 'all-linear', not a list holding it."""
    mods = list(config.lora_target_modules)
    return "all-linear" if "all-linear" in mods else mods


def load_model(config: TrainConfig, model_dir: str, device: str | None = None) -> LoadedModel:
    """Load the base for `config.method`, wrap adapters, and count parameters."""
    from transformers import AutoModelForCausalLM

    device = device or device_type()
    precision = resolve_precision(config, device)
    quant = _quantization(config, precision)
    kwargs: dict[str, Any] = {"dtype": precision.load_dtype}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = _device_map(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing

    if config.is_adapter_method:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if quant is not None:
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
    return LoadedModel(model=model, precision=precision, info=info)
