"""Export a Hugging Face model (LLaMA, Mistral, Qwen2/3, Gemma 2/3, Phi-3; optionally with a LoRA adapter) to GGUF.

The product of a fine-tune is an HF directory or a LoRA adapter; the chat tab and
other desktop apps run GGUF through llama.cpp. This module writes that file with
the `gguf` package: hyper-parameters, the tokenizer as llama.cpp must run it
(see _gguf_vocab.py), and the weights (see _gguf_tensors.py). Quantized types go
through llama.cpp's own quantizer (_gguf_quant.py).

Safety rules: the output appears only when complete (temp file + rename), a
full disk or an interrupt leaves nothing behind (the temp files a SIGKILL leaves,
the next export to the same name removes), pickle weights are never loaded, and
every refusal is one sentence a person can act on (ExportError).
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from medalpaca_desktop.core.disk_full import DISK_FULL_KIND, disk_full_message, is_disk_full
from medalpaca_desktop.core.events import Done, Error, EventWriter, Progress, Result, Started, Warning
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.model_info import format_size
from medalpaca_desktop.core.progress import ProgressReporter, format_duration

EXPORT_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k")
#: The HF architectures the exporter writes (trainer/_gguf_tensors.py ARCHITECTURES, kept in step by a test).
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                           "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM")

log = logging.getLogger(__name__)


class ExportError(Exception):
    """A reason the export cannot run, as one line for the person who asked for it.

    `kind`: "bad_input" (the request cannot work: exit 2) or "disk" (the disk is full: exit 1).
    """

    def __init__(self, message: str, kind: str = "bad_input") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class ExportConfig:
    """What to export and how; field help doubles as the export dialog's tooltips."""

    model: Path = field(metadata={"help": "Hugging Face model folder (config.json, *.safetensors, tokenizer files)."})
    out: Path = field(metadata={"help": "The .gguf file to write."})
    quant: str = field(default="f16", metadata={
        "help": "Weight type: f32 (exact), f16/bf16 (half size, near exact), q8_0 (quarter size, near f16 quality), "
                "q6_k / q5_k_m / q4_k_m (smaller and faster, some quality loss).",
        "choices": EXPORT_QUANTS,
    })
    adapter: Path | None = field(default=None, metadata={
        "help": "LoRA adapter folder from a fine-tune; it is merged into the model before writing."})
    overwrite: bool = field(default=False, metadata={"help": "Replace the output file if it already exists."})
    verify: str = field(default="", metadata={
        "help": "After writing, score the same questions on the original and on the file (TASK[:N]: a suite "
                "task such as medqa_4options:200, or a questions file) and warn when the file is significantly "
                "worse; empty = no check."})

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    def validate(self) -> dict[str, Any]:
        """Check everything that can be checked without loading weights; return config.json."""
        model = Path(self.model)
        if self.quant not in EXPORT_QUANTS:
            raise ExportError(f"Unknown export type {self.quant!r}; choose one of {', '.join(EXPORT_QUANTS)}.")
        if not model.exists():
            raise ExportError(f"Model folder not found: {model}")
        if model.is_file():
            kind = "a GGUF file already" if model.suffix.lower() == ".gguf" else "a file"
            raise ExportError(f"{model} is {kind}, not a Hugging Face model folder.")
        if not (model / "config.json").is_file():
            if (model / "adapter_config.json").is_file():
                raise ExportError(f"{model} is a LoRA adapter; pass it as the adapter and its base model as the model.")
            raise ExportError(f"{model} has no config.json, so it is not a Hugging Face model folder.")
        try:
            cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ExportError(f"{model / 'config.json'} is not valid JSON ({exc}).") from None
        archs = cfg.get("architectures") or []
        arch = archs[0] if archs else f"model_type {cfg.get('model_type', 'unknown')!r}"
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ExportError(f"Cannot export {arch} to GGUF; "
                              f"supported architectures: {', '.join(SUPPORTED_ARCHITECTURES)}.")
        if cfg.get("quantization_config"):
            method = cfg["quantization_config"].get("quant_method", "quantized")
            raise ExportError(f"{model} holds {method} quantized weights; export needs the full-precision model.")
        from trainer._gguf_tensors import pickle_files, safetensor_files

        if not safetensor_files(model):
            if pickle_files(model):
                raise ExportError(f"{model} has only pickle weights (.bin/.pt), which can run code when loaded; "
                                  "convert them to safetensors first.")
            raise ExportError(f"{model} has no weights (*.safetensors).")
        _check_files(model, "model")
        if self.adapter is not None:
            adapter = Path(self.adapter)
            if not (adapter / "adapter_config.json").is_file():
                raise ExportError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json).")
            if not list(adapter.glob("adapter_model*.safetensors")):
                if list(adapter.glob("adapter_model*.bin")):
                    raise ExportError(f"{adapter} has only pickle weights (adapter_model.bin); save it as safetensors.")
                raise ExportError(f"{adapter} has no adapter weights (adapter_model.safetensors).")
            _check_files(adapter, "adapter")
        out = Path(self.out)
        if out.is_dir():
            raise ExportError(f"{out} is a folder; give the path of the .gguf file to write.")
        if out.exists() and not self.overwrite:
            raise ExportError(f"{out} already exists (use --force to overwrite it).")
        return cfg


def _check_files(folder: Path, what: str) -> None:
    """Every safetensors file whole (core.model_check), so a truncated or lying file is one sentence here."""
    from medalpaca_desktop.core.model_check import ModelCheckError, check_safetensors_layout, check_weights

    try:
        if what == "model":
            check_weights(folder)
        else:
            for weights in folder.glob("adapter_model*.safetensors"):
                check_safetensors_layout(weights)
    except ModelCheckError as exc:
        raise ExportError(str(exc), exc.kind) from None


# --------------------------------------------------------------------------- export


def _disk_full(out: Path, needed: int | None = None) -> ExportError:
    kept = "nothing was written" + (f" and the existing {out.name} is unchanged" if out.exists() else "")
    return ExportError(disk_full_message(out.parent, "the GGUF file", needed=needed, kept=kept), DISK_FULL_KIND)


def _stage(events: EventWriter | None, terminal: IO[str] | None, stage: str, message: str = "") -> None:
    """A step without a count (loading, merging, quantizing): one event, one terminal line."""
    if events is not None:
        events.emit(Progress(stage=stage, current=0, total=None, message=message))
    if terminal is not None:
        terminal.write(f"{stage}{'  ' + message if message else ''}\n")
        terminal.flush()


def _merged_state(cfg_model: Path, adapter: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge a LoRA adapter into its base (inference.hf_model.merge_lora); returns (state dict, config dict)."""
    from transformers.utils import logging as hf_logging

    from medalpaca_desktop.inference.base import InferenceError
    from medalpaca_desktop.inference.hf_model import merge_lora

    hf_logging.disable_progress_bar()
    try:
        merged = merge_lora(cfg_model, adapter)
    except InferenceError as exc:  # the loader's own refusal (a quantized base, pickle weights) as it is
        raise ExportError(str(exc)) from None
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"The adapter {adapter} does not fit the model {cfg_model}: {first}") from None
    state = {k: v for k, v in merged.state_dict().items()}
    cfg = merged.config.to_dict()
    cfg.setdefault("architectures", [type(merged).__name__])
    del merged
    return state, cfg


def _tensor_loaders(model_dir: Path, state: dict[str, Any] | None) -> list[tuple[str, Any, tuple[int, ...]]]:
    """(name, loader, shape) for each weight, loading nothing yet."""
    if state is not None:
        return [(name, (lambda t=t: t), tuple(t.shape)) for name, t in state.items()]
    from safetensors import safe_open

    from trainer._gguf_tensors import safetensor_files

    items: list[tuple[str, Any, tuple[int, ...]]] = []
    for path in safetensor_files(model_dir):
        with safe_open(str(path), framework="pt") as fh:
            for name in fh.keys():
                shape = tuple(fh.get_slice(name).get_shape())

                def load(path: Path = path, name: str = name) -> Any:
                    with safe_open(str(path), framework="pt") as f2:
                        return f2.get_tensor(name)

                items.append((name, load, shape))
    return items


def _check_space(out: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(out.parent).free
    except OSError:
        return
    if free < needed:
        raise _disk_full(out, needed)


def _remove(*paths: Path | None) -> None:
    for p in paths:
        if p is not None:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # pragma: no cover - e.g. a read-only folder
                log.warning("could not remove %s: %s", p, exc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def _remove_dead_partials(out: Path) -> None:
    """Temp files a killed export of the same `out` left (`.<name>.<pid>-<ms>[...].partial`): removed.

    A partial file whose writer still runs (another export to the same name) is left alone.
    """
    for path in out.parent.glob(f".{glob.escape(out.name)}.*.partial"):
        token = path.name[len(out.name) + 2:].split("-", 1)[0]
        if token.isdigit() and int(token) != os.getpid() and not _pid_alive(int(token)):
            log.info("removing %s, left by an interrupted export", path.name)
            _remove(path)


#: Written by a fine-tune beside its weights (trainer/after.py): the prompt format it was trained with.
TEMPLATE_FILE = "medalpaca_template.json"


def _training_template(model_dir: Path) -> dict[str, str]:
    """`medalpaca.template` / `medalpaca.eos_token` GGUF keys, so chat and benchmark use the training format."""
    try:
        info = json.loads((model_dir / TEMPLATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {f"medalpaca.{key}": str(info[key]) for key in ("template", "eos_token") if info.get(key)}


def _write_gguf(path: Path, arch_spec: Any, cfg: dict[str, Any], vocab: Any, planned: list[Any],
                direct_type: str, name: str, reporter: ProgressReporter, model_dir: Path) -> None:
    """Stream header, metadata and tensors to `path`, one tensor in memory at a time."""
    import gguf

    from trainer._gguf_tensors import DIRECT_TYPES, add_hparams

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch_spec.gguf_arch])
    try:
        writer.add_name(name)
        writer.add_file_type(DIRECT_TYPES[direct_type][1])
        add_hparams(writer, cfg, arch_spec)
        vocab.add_to_gguf(writer)
        for key, value in _training_template(model_dir).items():
            writer.add_string(key, value)
        for t in planned:
            writer.add_tensor_info(t.name, t.shape, _np_float32(), t.nbytes, raw_dtype=t.qtype)
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, t in enumerate(planned, 1):
            writer.write_tensor_data(t.make())
            reporter.update(i, message=t.name)
        writer.flush()
    finally:
        writer.close()


def _np_float32() -> Any:
    import numpy as np

    return np.dtype(np.float32)


def export_gguf(config: ExportConfig, events: EventWriter | None = None, terminal: IO[str] | None = None) -> Path:
    """Write `config.model` (+ adapter) to `config.out` as GGUF; returns the path written.

    Progress (per tensor, with ETA) goes to `events` and/or `terminal`. Raises
    ExportError for anything the user can fix; nothing is left at `out` unless
    the export completed.
    """
    from trainer import _gguf_quant, _gguf_tensors, _gguf_vocab

    cfg = config.validate()
    model_dir, out = Path(config.model), Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    quantized = config.quant in _gguf_quant.QUANT_FTYPES
    arch_spec = _gguf_tensors.ARCHITECTURES[cfg["architectures"][0]]

    state = None
    if config.adapter is not None:
        _stage(events, terminal, "Merging adapter", str(config.adapter))
        state, merged_cfg = _merged_state(model_dir, Path(config.adapter))
        cfg = {**cfg, "vocab_size": merged_cfg.get("vocab_size", cfg["vocab_size"])}

    _stage(events, terminal, "Reading tokenizer")
    tok_dir = model_dir
    tokenizer_files = ("tokenizer.json", "tokenizer.model")
    if config.adapter is not None and any((Path(config.adapter) / f).is_file() for f in tokenizer_files):
        tok_dir = Path(config.adapter)  # a fine-tune that added tokens ships its tokenizer with the adapter
    try:
        vocab = _gguf_vocab.build_vocab(tok_dir, int(cfg["vocab_size"]), arch_spec.vocab, arch_spec.add_space_prefix)
    except _gguf_vocab.VocabError as exc:
        raise ExportError(f"Cannot export the tokenizer: {exc}.") from None
    for note in vocab.notes:
        log.info("%s", note)

    # Quantized types start from a lossless (f32) or as-stored (f16) intermediate file.
    direct_type = config.quant
    if quantized:
        direct_type = "f16" if str(cfg.get("torch_dtype", cfg.get("dtype", ""))) == "float16" else "f32"
    try:
        planned = _gguf_tensors.plan_tensors(_tensor_loaders(model_dir, state), cfg, arch_spec, direct_type)
    except _gguf_tensors.TensorError as exc:
        raise ExportError(f"Cannot export {model_dir}: {exc}.") from None

    base_bytes = sum(t.nbytes for t in planned)
    needed = base_bytes
    if quantized:
        n_weights = sum(math.prod(t.shape) for t in planned)
        needed += int(n_weights * _gguf_quant.BYTES_PER_WEIGHT[config.quant])
    _check_space(out, needed + (1 << 20))

    _remove_dead_partials(out)
    token = f"{os.getpid()}-{int(time.time() * 1000) % 100000}"
    final_tmp = out.with_name(f".{out.name}.{token}.partial")
    base_tmp = out.with_name(f".{out.name}.{token}.{direct_type}.partial") if quantized else final_tmp
    reporter = ProgressReporter("Writing tensors", total=len(planned), unit="tensors", events=events, terminal=terminal)
    done = False
    try:
        # the training format travels with the fine-tune: the adapter's metadata when it has them
        adapter_dir = Path(config.adapter) if config.adapter is not None else None
        template_dir = adapter_dir if adapter_dir and (adapter_dir / TEMPLATE_FILE).is_file() else model_dir
        _write_gguf(base_tmp, arch_spec, cfg, vocab, planned, direct_type, model_dir.name, reporter, template_dir)
        reporter.finish()
        del state
        if quantized:
            quant_progress = ProgressReporter(f"Quantizing to {config.quant}", total=len(planned), unit="tensors",
                                              events=events, terminal=terminal)
            def on_tensor(done: int, total: int, name: str) -> None:
                quant_progress.total = total
                quant_progress.update(done, name)

            try:
                notes = _gguf_quant.quantize_file(base_tmp, final_tmp, config.quant, on_tensor=on_tensor)
            except _gguf_quant.QuantizeError as exc:
                if is_disk_full(exc) or shutil.disk_usage(out.parent).free < (1 << 26):
                    raise _disk_full(out, needed) from None
                raise ExportError(f"{exc}.") from None
            quant_progress.finish()
            fallbacks = sum("falling back" in n for n in notes)
            if fallbacks:
                log.info("llama.cpp used a fall-back type for %d tensors whose rows are not a multiple of 256",
                         fallbacks)
            _remove(base_tmp)
        os.replace(final_tmp, out)
        done = True
    except OSError as exc:
        if is_disk_full(exc):
            raise _disk_full(out, needed) from None
        raise ExportError(f"Could not write {out}: {exc.strerror or exc}.") from None
    finally:
        if not done:
            _remove(base_tmp, final_tmp)
    return out


# --------------------------------------------------------------------------- CLI


def _verify_export(config: ExportConfig, path: Path, worker: Any, events: Any) -> dict[str, Any] | None:
    """bench.verify on the original (with its adapter) and the file just written; a failure of the check is an
    error event (kind "verify") and the file stays."""
    from bench.run import BadInput
    from bench.verify import parse_verify, verify
    from medalpaca_desktop.core.typed_config import ConfigError

    try:
        task, n = parse_verify(config.verify)
        result = verify(str(config.model), str(path), task, n, path.parent / f"{path.name}.verify",
                        reference_adapter=str(config.adapter) if config.adapter else None, writer=events,
                        stop=worker.stop, resume=False)
    except (BadInput, ConfigError, RuntimeError) as exc:
        worker.emit(Error(message=f"The export was written, but it could not be checked: {exc}", kind="verify"))
        return None
    if events is None:  # at a terminal: the verdict, and a warning line when the file is worse
        print(result["verdict"])
        if result["significantly_worse"]:
            worker.emit(Warning(message=result["verdict"], extra={"kind": "export_worse"}))
    return result


def run_export_cli(config: ExportConfig, jsonl: bool) -> ExitCode:
    """`medalpaca export`: JSON-line events on stdout (jsonl) or a progress line on stderr.

    An ExportError is one error event (for a person at a terminal: one `medalpaca: error:`
    line) and exit code 2 (1 for a full disk); SIGINT/SIGTERM stop at once, temp files removed (exit 130).
    """
    from medalpaca_desktop.core.worker import TerminalWriter, Worker, run_worker

    def job(worker: Worker) -> ExitCode:
        events = worker.writer if jsonl else None
        info = {"model": str(config.model), "out": str(config.out), "quant": config.quant,
                "adapter": str(config.adapter) if config.adapter else None}
        if events is not None:
            events.emit(Started(job="export", info=info))
        started = time.monotonic()
        try:
            path = export_gguf(config, events=events, terminal=None if jsonl else sys.stderr)
        except ExportError as exc:
            worker.emit(Error(message=str(exc), kind=exc.kind))
            worker.emit(Done(ok=False))
            return ExitCode.FAILED if exc.kind == DISK_FULL_KIND else ExitCode.BAD_INPUT
        except KeyboardInterrupt:
            worker.emit(Error(message="Export stopped; no file was written.", kind="stopped"))
            worker.emit(Done(ok=False, stopped=True))
            raise
        seconds = time.monotonic() - started
        size = path.stat().st_size
        data: dict[str, Any] = {"path": str(path), "size_bytes": size, "quant": config.quant,
                                "seconds": round(seconds, 2)}
        if events is None:
            print(f"Wrote {path} ({format_size(size)}, {config.quant}) in {format_duration(seconds)}")
        if config.verify:
            checked = _verify_export(config, path, worker, events)
            if checked is not None:
                data["verify"] = checked
        if events is not None:
            events.emit(Result(data=data))
            events.emit(Done(ok=True, data=data))
        return ExitCode.OK

    return run_worker(job, name="export", writer=None if jsonl else TerminalWriter("medalpaca"), interrupt=True)
