"""TrainConfig: the one description of a fine-tune, read from and written to YAML.

Validated before anything heavy is imported, with one-line errors that name the
field. Field help doubles as the fine-tune wizard's tooltips; cross-field rules
(quantized bases need an adapter method, ...) live in `validate()`. The exact
config is saved beside every run so it can be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medalpaca_desktop.core.typed_config import (
    ConfigError,
    check_all_limits,
    coerce_value,
    fields_of,
    read_yaml_mapping,
    save_yaml_atomic,
)
from medalpaca_desktop.core.typed_config import config_field as _f

METHODS: tuple[str, ...] = ("full", "lora", "lora-8bit", "qlora")
TEMPLATES: tuple[str, ...] = ("medalpaca", "chat")
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
BEST_BY: tuple[str, ...] = ("auto", "accuracy", "val_loss", "last")


class BenchTaskError(ValueError):
    """bench_task names nothing that can be scored (a task not downloaded, a file that is not questions)."""


@dataclass
class TrainConfig:
    """A fine-tuning job. Defaults follow the MedAlpaca repository's train.py (kbressem/medAlpaca) and the paper."""

    base_model: str = _f("", "Base model: a Hugging Face model folder, or a GGUF file (de-quantized first; "
                             "quality is that of the quantized file).")
    method: str = _f("lora", "full: all weights; lora: low-rank adapters; lora-8bit: LoRA on an 8-bit base "
                             "(bitsandbytes); qlora: LoRA on a 4-bit NF4 base.", choices=METHODS)
    data: list[str] = _f(help="Training data: JSON/JSONL (instruction, input, output), CSV/TSV, or a saved "
                              "Hugging Face dataset folder. Several sources are mixed.", factory=list)
    data_weights: list[float] = _f(help="Optional sampling weight per data source (same order as data).",
                                   factory=list, group="advanced")
    output_dir: str = _f("", "Run folder: config, events, checkpoints and the final model are written here.")
    epochs: float = _f(3.0, "Passes over the training data.", minimum=0.01, maximum=1000)
    max_steps: int = _f(0, "Stop after this many optimizer steps (overrides epochs when > 0).", minimum=0)
    learning_rate: float = _f(2e-5, "Peak learning rate (cosine schedule after warm-up).", minimum=1e-8,
                              maximum=1.0)
    global_batch_size: int = _f(128, "Examples per optimizer step over all processes; gradient accumulation "
                                     "is derived from it.", minimum=1)
    micro_batch_size: int = _f(2, "Examples per forward pass on one device.", minimum=1)
    max_length: int = _f(256, "Longest example in tokens; longer ones are truncated.", minimum=8,
                         maximum=1_048_576)
    warmup_steps: int = _f(100, "Steps of linear learning-rate warm-up.", minimum=0)
    lr_scheduler: str = _f("cosine", "Learning-rate schedule after warm-up.", group="advanced",
                           choices=("cosine", "linear", "constant"))
    weight_decay: float = _f(0.0, "AdamW weight decay.", group="advanced", minimum=0.0, maximum=1.0)
    val_split: float = _f(0.1, "Share of records held out for validation loss (0 = none).", minimum=0.0,
                          maximum=0.5)
    eval_steps: int = _f(50, "Evaluate validation loss every this many steps.", group="advanced", minimum=1)
    early_stopping_patience: int = _f(0, "Stop after this many evaluations without a better validation loss "
                                         "(0 = off).", group="advanced", minimum=0)
    bench_task: str = _f("", "Score a benchmark at every evaluation, on the weights being trained: a task of the "
                             "medical suite (medqa_4options, medmcqa, pubmedqa, mmlu_..., usmle; downloaded in the "
                             "Benchmark tab) or a questions file (MedQA JSONL, USMLE folder, table); empty = off.",
                         group="benchmark")
    bench_questions: int = _f(200, "How many of its questions are scored (a fixed, seeded choice; 0 = all). "
                                   "Log-likelihood with lm-eval's prompt, as the leaderboards score.",
                              group="benchmark", minimum=0)
    best_by: str = _f("auto", "The measure that picks the best checkpoint, which is never rotated away and "
                              "becomes final/ (what chat, merge and export use): accuracy on the benchmark, "
                              "validation loss, or the last step. auto: accuracy with a benchmark, else "
                              "validation loss with a validation split, else the last step. Early stopping "
                              "follows it too.", group="benchmark", choices=BEST_BY)
    save_steps: int = _f(100, "Save a checkpoint every this many steps.", group="advanced", minimum=1)
    save_total_limit: int = _f(2, "Checkpoints kept (the newest).", group="advanced", minimum=1)
    seed: int = _f(42, "Random seed for shuffling, the split and initialisation.", group="advanced")
    lora_r: int = _f(8, "LoRA rank.", minimum=1, maximum=1024)
    lora_alpha: int = _f(16, "LoRA scaling (alpha / r multiplies the update).", minimum=1)
    lora_dropout: float = _f(0.1, "Dropout on the LoRA path.", minimum=0.0, maximum=0.9)
    lora_target_modules: list[str] = _f(help="Layers that get adapters, e.g. q_proj, v_proj; "
                                             "'all-linear' for every linear layer.",
                                        factory=lambda: ["q_proj", "v_proj"])
    train_on_inputs: bool = _f(False, "Also learn to predict the prompt (False: only the answer counts).")
    template: str = _f("medalpaca", "Prompt format for training: the MedAlpaca template or the model's chat "
                                    "template.", choices=TEMPLATES)
    packing: bool = _f(False, "Pack several short examples into one sequence (faster, no padding).",
                       group="advanced")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass: less memory, ~30 % "
                                             "slower.")
    precision: str = _f("auto", "auto: bf16 where the GPU supports it, else fp16 on a GPU; on a CPU bf16 where it "
                                "computes bf16 natively (AVX-512 BF16, AMX), else fp32. fp32: exact, slower.",
                        group="compute", choices=PRECISIONS)
    num_processes: int = _f(1, "Processes (GPUs) to train on; more than 1 runs through accelerate launch.",
                            group="compute", minimum=1)
    stop_on_bad_loss: bool = _f(True, "Stop with an alert when the loss becomes NaN/inf or exactly 0.",
                                group="advanced")
    merge_adapter: bool = _f(False, "After training, merge the LoRA adapter into the full-precision base.",
                             group="export")
    export_gguf: str = _f("", "After training, also write a GGUF file of this type (f16, q8_0, q4_k_m, ...) "
                              "for the chat tab; empty = no export.", group="export")

    # ------------------------------------------------------------------ helpers

    @classmethod
    def field_help(cls, name: str) -> str:
        return str(_fields()[name].metadata.get("help", ""))

    def best_measure(self) -> str:
        """best_by with auto resolved: "accuracy", "val_loss" or "last"."""
        if self.best_by != "auto":
            return self.best_by
        if self.bench_task:
            return "accuracy"
        return "val_loss" if self.val_split > 0 else "last"

    @property
    def is_adapter_method(self) -> bool:
        return self.method != "full"

    def gradient_accumulation(self, processes: int | None = None) -> int:
        """global = micro x processes x accumulation; the user gives global."""
        per_step = self.micro_batch_size * (processes or self.num_processes)
        return max(1, math.ceil(self.global_batch_size / per_step))

    def validate(self) -> TrainConfig:
        """Raise ConfigError (one line, naming the field) for a config that cannot run."""
        check_all_limits(self)
        if not self.base_model:
            raise ConfigError("base_model: give a Hugging Face model folder or a GGUF file")
        if not self.data:
            raise ConfigError("data: give at least one data file or saved dataset")
        if not self.output_dir:
            raise ConfigError("output_dir: give the folder the run is written to")
        if self.data_weights and len(self.data_weights) != len(self.data):
            raise ConfigError(f"data_weights: {len(self.data_weights)} weights for {len(self.data)} sources")
        if any(w <= 0 for w in self.data_weights):
            raise ConfigError("data_weights: every weight must be positive")
        if self.is_adapter_method and not self.lora_target_modules:
            raise ConfigError("lora_target_modules: name at least one layer (or 'all-linear')")
        if self.method == "full" and self.merge_adapter:
            raise ConfigError("merge_adapter: a full fine-tune has no adapter to merge")
        if self.micro_batch_size * self.num_processes > self.global_batch_size:
            raise ConfigError(f"global_batch_size: {self.global_batch_size} is smaller than micro_batch_size x "
                              f"num_processes ({self.micro_batch_size * self.num_processes})")
        if self.bench_task and self.val_split <= 0:
            raise ConfigError("bench_task: the benchmark is scored at each evaluation, which needs a validation "
                              "split (val_split > 0)")
        if self.best_by == "accuracy" and not self.bench_task:
            raise ConfigError("best_by: accuracy needs a benchmark to score (bench_task)")
        if self.best_by == "val_loss" and self.val_split <= 0:
            raise ConfigError("best_by: val_loss needs a validation split (val_split > 0)")
        if self.export_gguf and self.export_gguf not in ("f32", "f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k"):
            raise ConfigError(f"export_gguf: {self.export_gguf!r} is not a GGUF type "
                              "(f32, f16, bf16, q8_0, q4_k_m, q5_k_m, q6_k)")
        return self

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError("the config must be a YAML mapping of keys to values")
        known = _fields()
        unknown = sorted(set(data) - set(known), key=str)  # YAML keys may be numbers or null
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown key (known keys: see `medalpaca train --help-config`)")
        kwargs = {name: _coerce(name, known[name], value) for name, value in data.items()}
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Read YAML, apply `key=value` overrides, validate."""
        data = read_yaml_mapping(path)
        data.pop("preset_source", None)  # presets name their source; not a training setting
        for item in overrides or []:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set {item!r}: write key=value")
            try:
                data[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
            except (yaml.YAMLError, RecursionError):
                raise ConfigError(f"--set {key.strip()}: the value is not valid YAML; quote it") from None
        return cls.from_dict(data).validate()

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename)."""
        return save_yaml_atomic(self.to_dict(), path)


def _fields() -> dict[str, dataclasses.Field]:
    return fields_of(TrainConfig)


def _coerce(name: str, f: dataclasses.Field, value: Any) -> Any:
    return coerce_value(name, f, value, float if name == "data_weights" else str)
