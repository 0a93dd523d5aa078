"""Everything the transformers backend decides before and around `from_pretrained`.

Why a module of its own: these are the checks that turn a bad folder, a pickle
checkpoint, a model too big for this machine or an out-of-memory error into one
clear InferenceError with a `kind` the host reports, instead of a traceback.
The folder is read with core.hf_meta (small JSON files and safetensors headers),
so nothing unsafe is opened before the user's choices have been checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medalpaca_desktop.core import hf_meta, model_check
from medalpaca_desktop.core.chat_protocol import LoadSpec
from medalpaca_desktop.core.model_info import format_size
from medalpaca_desktop.inference.base import InferenceError
from medalpaca_desktop.inference.hf_model import remote_code_refused

#: Bytes per parameter once loaded, by how it is loaded (bnb keeps norms/embeddings
#: unquantized, hence more than 1 and 0.5).
BYTES_PER_PARAM = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "8bit": 1.15, "4bit": 0.65}
MEMORY_OVERHEAD = 1.15  # activations, KV cache of a first answer, allocator slack
OOM_ADVICE = ("Try loading it in 8-bit or 4-bit, a smaller model, or a GGUF quantization with the "
              "llama.cpp backend.")


@dataclass(frozen=True)
class Placement:
    """Where and in which precision the weights go."""

    device: str  # "cpu" or "cuda:0"
    dtype_name: str  # "float32" | "float16" | "bfloat16"
    notes: tuple[str, ...] = ()

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)


def choose_placement(requested: str) -> Placement:
    """CUDA when present (or forced), else CPU; bf16 on GPUs that have it, fp16 on others, fp32 on CPU."""
    import torch

    notes: list[str] = []
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU was found"
        raise InferenceError(f"The GPU was requested but {why}. Choose device 'auto' or 'cpu'.", "unsupported")
    if requested not in ("auto", "cuda", "cpu"):
        raise InferenceError(f"Unknown device {requested!r}; choose auto, cuda or cpu.", "bad_request")
    if requested == "cpu" or not has_cuda:
        if requested == "auto":
            notes.append("Running on the CPU: this PyTorch is a CPU-only build." if torch.version.cuda is None
                         else "Running on the CPU: no CUDA GPU was found.")
        return Placement("cpu", "float32", tuple(notes))
    index = torch.cuda.current_device()
    dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return Placement(f"cuda:{index}", dtype, tuple(notes))


def check_model_folder(spec: LoadSpec) -> tuple[Path, dict[str, Any]]:
    """(folder, config.json) or the InferenceError a person can act on (pickle weights: see hf_model)."""
    folder = Path(spec.model).expanduser()
    if not spec.model or not folder.exists():
        raise InferenceError(f"Model folder not found: {folder}", "not_found")
    if folder.is_file():
        if folder.suffix.lower() == ".gguf":
            raise InferenceError(f"{folder.name} is a GGUF file: load it with the llama.cpp backend.", "unsupported")
        raise InferenceError(f"{folder} is a file; choose the model folder that holds config.json.", "unsupported")
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        raise InferenceError(f"{folder} is a LoRA adapter: load its base model and choose this folder as the "
                             "adapter.", "unsupported")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InferenceError(f"{folder} has no config.json: not a Hugging Face model folder.", "unsupported")
    try:
        config = hf_meta.read_json(config_path)
    except hf_meta.HFMetaError as exc:
        raise InferenceError(f"{folder}: {exc}", "corrupt") from None
    if not hf_meta.looks_like_model_config(config):
        raise InferenceError(f"{folder}: config.json has no model_type or architectures.", "unsupported")
    if hf_meta.weight_format(folder) == "none":
        raise InferenceError(f"{folder} holds no weight files (an incomplete download?).", "corrupt")
    try:
        model_check.check_weights(folder)
        model_check.check_tokenizer(folder)
    except model_check.ModelCheckError as exc:
        raise InferenceError(str(exc), exc.kind) from None
    return folder, config


def adapter_chat_template(folder: Path) -> str | None:
    """The chat template a fine-tune's adapter folder carries (trainer/after.py writes it), else None."""
    path = folder / "chat_template.jinja"
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def check_adapter_folder(spec: LoadSpec) -> Path | None:
    """The adapter folder, checked like a model folder (exists, holds adapter weights)."""
    if not spec.adapter:
        return None
    folder = Path(spec.adapter).expanduser()
    if not folder.is_dir():
        raise InferenceError(f"Adapter folder not found: {folder}", "not_found")
    if not (folder / "adapter_config.json").is_file():
        raise InferenceError(f"{folder} has no adapter_config.json: not a PEFT adapter.", "unsupported")
    if not list(folder.glob("adapter_model*.safetensors")) and not list(folder.glob("adapter_model*.bin")):
        raise InferenceError(f"{folder} holds no adapter weights (an incomplete copy?).", "corrupt")
    for weights in folder.glob("adapter_model*.safetensors"):
        try:
            model_check.check_safetensors_layout(weights)
        except model_check.ModelCheckError as exc:
            raise InferenceError(str(exc), exc.kind) from None
    return folder  # pickle adapter weights are refused by the loader (hf_model.load_causal_lm)


def estimate_bytes(folder: Path, config: dict[str, Any], load_in: str, dtype_name: str) -> int | None:
    """Memory the loaded weights need (None when the folder does not say)."""
    params, _estimated = hf_meta.parameter_count(folder, hf_meta.config_dtype(config))
    if not params or hf_meta.quantization_method(config):  # pre-quantized: the header count is packed
        return None
    per_param = BYTES_PER_PARAM["8bit" if load_in == "8bit" else "4bit" if load_in == "4bit" else dtype_name]
    return int(params * per_param * MEMORY_OVERHEAD)


def free_bytes(device: str) -> int | None:
    import torch

    from medalpaca_desktop.inference.memory import free_ram

    if device.startswith("cuda"):
        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:  # noqa: BLE001 - a probe failure must not block loading
            return None
    return free_ram()


#: Of each GPU's free memory, what device_map="auto" may fill when a model is spread over several.
SPREAD_SHARE = 0.9
SPREAD = "auto"  # Placement.device of a model spread over every GPU by accelerate (device_map="auto")


def spreads_over_gpus(need: int, free_per_gpu: list[int], current: int = 0) -> bool:
    """Whether a model that does not fit the current GPU fits all of them together (several GPUs)."""
    return (len(free_per_gpu) > 1 and need > free_per_gpu[current]
            and need <= SPREAD_SHARE * sum(free_per_gpu))


def gpu_free_list() -> list[int]:
    import torch

    try:
        return [int(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a probe failure: behave as one GPU
        return []


def check_memory(folder: Path, config: dict[str, Any], spec: LoadSpec, placement: Placement) -> Placement:
    """Refuse before loading when the weights clearly cannot fit (kind "too_large"); a model larger
    than one GPU that fits several is spread over them (device_map="auto"). Returns the placement."""
    try:
        need = estimate_bytes(folder, config, spec.load_in, placement.dtype_name)
    except hf_meta.HFMetaError as exc:  # a weight file whose header cannot be read: damaged or incomplete
        raise InferenceError(f"{folder.name} looks damaged: {exc}", "corrupt") from None
    free = free_bytes(placement.device)
    if need is None or free is None or need <= free:
        return placement
    if placement.device.startswith("cuda"):
        frees = gpu_free_list()
        index = int(placement.device.split(":")[1]) if ":" in placement.device else 0
        if frees and spreads_over_gpus(need, frees, index):
            note = (f"{folder.name} needs about {format_size(need)}, more than one GPU has free: spread over "
                    f"{len(frees)} GPUs (accelerate device_map=\"auto\").")
            return Placement(SPREAD, placement.dtype_name, placement.notes + (note,))
    where = "GPU memory" if placement.device.startswith("cuda") else "RAM"
    hint = OOM_ADVICE if spec.load_in != "4bit" else ("Try a smaller model, or a GGUF quantization with the "
                                                      "llama.cpp backend.")
    raise InferenceError(f"This model needs about {format_size(need)} of {where} but only {format_size(free)} "
                         f"is free. {hint}", "too_large")


def spread_max_memory(frees: list[int]) -> dict[int, int]:
    """device_map="auto"'s per-GPU limit: SPREAD_SHARE of what each GPU has free."""
    return {i: int(SPREAD_SHARE * f) for i, f in enumerate(frees)}


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text)


def oom_error(what: str) -> InferenceError:
    return InferenceError(f"Out of memory while {what}. {OOM_ADVICE}", "oom")


def load_error(exc: BaseException, folder: Path, spec: LoadSpec) -> InferenceError:
    """Map what transformers/peft/safetensors raise while loading to one InferenceError."""
    if isinstance(exc, InferenceError):
        return exc
    if is_oom(exc):
        return oom_error(f"loading {folder.name}")
    text = " ".join(str(exc).split())
    first = text[:300]
    name = type(exc).__name__
    if "trust_remote_code" in text:
        return remote_code_refused(folder)
    if name == "UnpicklingError" or "weights_only" in text:  # torch refused a pickle that is more than tensors
        return InferenceError(f"{folder.name} holds pickle weights that are not plain tensors: they were not "
                              "loaded, as they could run code. Use a safetensors copy of this model.",
                              "pickle_refused")
    if name in ("SafetensorError", "HeaderTooLarge", "EOFError", "JSONDecodeError") or any(
            k in text.lower() for k in ("deserializ", "invalid header", "incomplete metadata", "truncated",
                                        "size mismatch", "unexpected end", "corrupt")):
        return InferenceError(f"{folder.name} looks damaged: {first}", "corrupt")
    if isinstance(exc, (ValueError, KeyError, ImportError, NotImplementedError)) or "does not recognize" in text \
            or "Unrecognized" in text:
        return InferenceError(f"{folder.name} cannot be loaded by transformers: {first}", "unsupported")
    if isinstance(exc, OSError):
        return InferenceError(f"{folder.name} could not be read: {first}", "corrupt")
    return InferenceError(f"Loading {folder.name} failed ({name}): {first}", "internal")


class WeightProgress:
    """Stands in for transformers' "Loading weights" tqdm bar and reports its fraction instead.

    Installed with transformers.utils.logging.set_tqdm_hook for the duration of
    one load; reports at most every 0.2 s so a large model does not flood the host.
    """

    def __init__(self, report: Callable[[float], None], iterable: Any = None, total: int | None = None,
                 **_kwargs: Any) -> None:
        self._report = report
        self._iterable = iterable
        self._total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self._done = 0
        self._last = 0.0

    def __iter__(self) -> Iterator[Any]:
        for item in self._iterable:
            yield item
            self.update(1)

    def update(self, n: float = 1) -> None:
        self._done += int(n)
        now = time.monotonic()
        if self._total and (now - self._last >= 0.2 or self._done >= self._total):
            self._last = now
            self._report(min(1.0, self._done / self._total))

    def __enter__(self) -> WeightProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __getattr__(self, _name: str) -> Callable[..., None]:  # set_description, close, refresh, ...
        return lambda *args, **kwargs: None
