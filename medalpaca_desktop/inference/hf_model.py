"""The one place Hugging Face weights are loaded and a LoRA adapter is merged.

Chat, benchmarks (inference/hf.py), training (trainer/methods.py), the merge
after training (trainer/after.py) and the GGUF export (trainer/export.py) all
load through here, so placement, dtype, the 8/4-bit recipe, the adapter, and the
refusals (pickle weights, code shipped with a model) are decided once. What
turns a library error into a message for a person stays with each caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medalpaca_desktop.core import hf_meta
from medalpaca_desktop.core.model_check import pickle_refusal
from medalpaca_desktop.inference.base import InferenceError

LOAD_IN = ("none", "8bit", "4bit")


@dataclass
class HFModel:
    """A loaded transformers model (with its adapter, when one was applied) and what the loader saw."""

    model: Any
    loading_info: dict[str, Any] = field(default_factory=dict)
    quantized: bool = False


def pickle_refused(folder: Path) -> InferenceError:
    refusal = pickle_refusal(folder)
    return InferenceError(str(refusal), refusal.kind)


def refuse_pickle(folder: Path, allow_pickle: bool, adapter: bool = False) -> None:
    """Raise pickle_refused unless `folder` (a model, or an adapter) has safetensors or pickle is allowed."""
    folder = Path(folder)
    if allow_pickle or not folder.is_dir():  # not a folder: a hub id, resolved from the offline cache
        return
    if adapter:
        if not list(folder.glob("adapter_model*.safetensors")) and list(folder.glob("adapter_model*.bin")):
            raise pickle_refused(folder)
    elif hf_meta.weight_format(folder) == "pickle":
        raise pickle_refused(folder)


def remote_code_refused(folder: Path) -> InferenceError:
    return InferenceError(f"{folder.name} needs the Python code shipped with it (trust_remote_code), which this "
                          "app never runs: choose a model whose architecture transformers knows.", "unsupported")


def refuse_remote_code(folder: Path) -> None:
    """Raise remote_code_refused when the folder's architecture exists only as its own code (config auto_map).

    A known model_type with an auto_map (many hub repos ship both) loads with
    transformers' own classes, and the folder's code is never imported.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        return
    try:
        config = hf_meta.read_json(path)
    except hf_meta.HFMetaError:
        return  # transformers names the problem
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if config.get("auto_map") and config.get("model_type") not in CONFIG_MAPPING_NAMES:
        raise remote_code_refused(Path(folder))


def quantization_config(load_in: str | None, compute_dtype: Any) -> Any:
    """BitsAndBytesConfig for 8-bit, or 4-bit NF4 with double quantization (QLoRA's recipe); None for none."""
    if load_in in ("none", "", None):
        return None
    from transformers import BitsAndBytesConfig

    if load_in == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if load_in == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    raise InferenceError(f"Unknown load_in {load_in!r}; choose {', '.join(LOAD_IN)}.", "bad_request")


def load_causal_lm(folder: str | Path, *, dtype: Any = "auto", device: str | None = "cpu", load_in: str = "none",
                   compute_dtype: Any = None, adapter: str | Path | None = None, allow_pickle: bool = False,
                   gguf_file: str | None = None, max_memory: dict[int, int] | None = None) -> HFModel:
    """Weights of `folder` in `dtype` on `device` (None: wherever transformers puts them; "auto": spread
    over the GPUs by accelerate within `max_memory`), optionally
    quantized (`load_in` 8bit/4bit, computing in `compute_dtype`, default `dtype`), with a frozen adapter;
    `gguf_file`: a GGUF file in `folder`, de-quantized by transformers.

    Pickle checkpoints are refused unless `allow_pickle`; code shipped with the
    model never runs (`trust_remote_code` stays off).
    """
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if gguf_file is None:  # with one, transformers reads that file alone, whatever else the folder holds
        refuse_pickle(folder, allow_pickle)
        refuse_remote_code(folder)
    if adapter is not None:
        refuse_pickle(Path(adapter), allow_pickle, adapter=True)
    quant = quantization_config(load_in, compute_dtype if compute_dtype is not None else dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "quantization_config": quant, "trust_remote_code": False,
                              "use_safetensors": None if allow_pickle else True, "local_files_only": True,
                              "output_loading_info": True}
    if device == "auto":
        kwargs["device_map"] = "auto"
        if max_memory:
            kwargs["max_memory"] = max_memory
    elif device is not None:
        kwargs["device_map"] = {"": device}
    if gguf_file is not None:
        kwargs.update(gguf_file=gguf_file, use_safetensors=None)
    loaded: Any = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)  # (model, info): output_loading_info
    model, loading_info = loaded
    if adapter is not None:
        model = apply_adapter(model, Path(adapter))
    return HFModel(model=model, loading_info=dict(loading_info or {}), quantized=quant is not None)


def apply_adapter(model: Any, adapter: Path) -> Any:
    """The model wrapped with a saved (frozen) LoRA adapter."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter), is_trainable=False)


def quantized_base_refused(folder: Path, method: str) -> InferenceError:
    return InferenceError(
        f"{folder.name} holds {method}-quantized weights: a LoRA adapter can only be merged into a full-precision "
        "base. Use the original (unquantized) model folder the adapter was trained on.", "unsupported")


def merge_lora(base_dir: str | Path, adapter_dir: str | Path, allow_pickle: bool = False) -> Any:
    """The base (full precision, on the CPU) with the adapter merged into its weights (peft merge_and_unload).

    Refuses a quantized base: merging into 8-bit / 4-bit weights would round
    the adapter away, so an 8-bit or QLoRA training base is reloaded as stored.
    """
    import torch

    base_dir = Path(base_dir)
    config_path = base_dir / "config.json"
    if config_path.is_file():  # refuse before reading gigabytes of weights
        method = hf_meta.quantization_method(hf_meta.read_json(config_path))
        if method:
            raise quantized_base_refused(base_dir, method)
    loaded = load_causal_lm(base_dir, dtype="auto", device="cpu", adapter=adapter_dir, allow_pickle=allow_pickle)
    base_config = loaded.model.get_base_model().config
    if getattr(base_config, "quantization_config", None):
        raise quantized_base_refused(base_dir, "bitsandbytes")
    merged = loaded.model.merge_and_unload()
    if any(p.dtype not in (torch.float32, torch.float16, torch.bfloat16) for p in merged.parameters()):
        raise InferenceError("The merged model has non-float weights.", "internal")
    merged.config.use_cache = True
    if hasattr(merged.config, "quantization_config"):
        delattr(merged.config, "quantization_config")
    return merged
