"""What the app knows about a model on disk, read without loading its weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

ModelKind = Literal["hf", "gguf", "adapter"]

DEMO_MODEL_NOTE = "Small general demo model - not medical, for trying the app."


class ModelInspectError(ValueError):
    """A path that is not a readable model; the message is one line for a person.

    `reason` is the same without the path, for problem lists that show the path anyway.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason


@dataclass
class ModelInfo:
    """Metadata of one model: an HF directory, a GGUF file or a LoRA adapter folder."""

    path: str
    name: str
    kind: ModelKind
    weight_format: str = ""  # "safetensors", "pickle", "gguf", "none"
    architecture: str | None = None  # e.g. "LlamaForCausalLM" or GGUF "llama"
    model_type: str | None = None  # HF config model_type / GGUF general.architecture
    parameters: int | None = None
    dtype: str | None = None  # torch_dtype of HF weights
    quantization: str | None = None  # GGUF file type (Q4_1...) or HF quantization_config method
    context_length: int | None = None
    chat_template: str | None = None
    size_bytes: int = 0
    source: str = "folder"  # "demo", "folder", "hf-cache", an app name ...
    base_model: str | None = None  # adapters: the base they were trained on
    adapter_type: str | None = None  # adapters: "LORA" ...
    pickle_weights: bool = False
    loadable_by_default: bool = True  # False for pickle weights until the user allows them
    supported: bool = True  # architecture the app's engines handle (LLaMA family)
    note: str = ""  # shown to the user (demo label, warnings)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_demo(self) -> bool:
        return self.source == "demo"

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class DiscoveryProblem:
    """A path discovery found but could not read; listed, never fatal."""

    path: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def format_size(num_bytes: int | None) -> str:
    """'98.2 MB', '13.5 GB'."""
    if not num_bytes:
        return "-"
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def format_parameters(count: int | None) -> str:
    """'135M', '6.7B', '38K'."""
    if not count:
        return "-"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= div:
            value = count / div
            return f"{value:.1f}{suffix}" if value < 10 else f"{value:.0f}{suffix}"
    return str(count)
