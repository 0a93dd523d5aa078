"""After-training steps: model card, template metadata, adapter merge, GGUF export and its check.

Called by the job (trainer/run.py) after the final adapter or model has been saved and
verified, before `done`. Every step reports progress; a failing step becomes an
`error` event with kind "export" and never touches the saved `final/` folder, so a
failed merge or export cannot turn a good training run into a lost one.

- The model card (README.md) goes beside the final weights, and beside the merged model.
- The prompt template and end token travel with the result: `medalpaca_template.json`
  and `tokenizer_config.json` (`medalpaca_template`, `medalpaca_eos_token`) in every
  saved folder; with template "medalpaca" the MedAlpaca format is also written as the
  folder's Jinja chat template, so llama.cpp's chat completion (which reads the GGUF's
  `tokenizer.chat_template`) formats prompts as training did.
- merge_adapter: LoRA merged by inference.hf_model.merge_lora (the one merge, which refuses a
  quantized base) into the base loaded in full precision, also for lora-8bit / qlora, saved as
  safetensors + tokenizer into `output_dir/merged` (temp folder, verified, renamed).
- export_gguf: the merged model (merged into a temporary folder first when merge_adapter
  is off) written with trainer.export.export_gguf to `output_dir/<name>-<quant>.gguf`, then
  its logits compared with the merged HF model's on a few short prompts with llama.cpp.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medalpaca_desktop.core.events import Error, EventWriter, Metric, Progress, Result, read_events_file
from trainer.config import TrainConfig
from trainer.export import TEMPLATE_FILE  # the exporter reads it into the GGUF's medalpaca.* keys
from trainer.model_files import copy_sentencepiece_files, resolve_base_model, verify_saved

MERGED = "merged"
CHECK_PROMPTS = (
    "What is the normal adult resting heart rate?",
    "Name the first-line treatment for anaphylaxis.",
    "Which organ produces insulin?",
)


# --------------------------------------------------------------------------- template


def medalpaca_chat_template() -> str:
    """The MedAlpaca prompt format as a Jinja chat template (what render_medalpaca writes).

    A system message replaces the primer; each user turn is an Instruction/Input/Response
    block, each earlier answer follows its "### Response:" and ends with the end token.
    """
    from medalpaca_desktop.core.prompts import medalpaca_template

    tpl = medalpaca_template()
    q = json.dumps  # a JSON string is a valid Jinja string literal
    return (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{{ messages[0]['content'] }}{%- set loop_messages = messages[1:] -%}"
        f"{{%- else -%}}{{{{ {q(tpl.primer)} }}}}{{%- set loop_messages = messages -%}}{{%- endif -%}}"
        "{%- for message in loop_messages -%}"
        "{%- if message['role'] == 'user' -%}"
        f"{{{{ {q(tpl.instruction)} + message['content'] + {q(tpl.input)} + {q(tpl.output)} }}}}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{ message['content'] + eos_token }}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_template_metadata(folder: Path, template: str, eos_token: str) -> Path:
    """medalpaca_template.json + tokenizer_config.json keys (+ the Jinja chat template for medalpaca)."""
    folder = Path(folder)
    info = {"template": template, "eos_token": eos_token}
    chat_template = None
    if template == "medalpaca":
        chat_template = medalpaca_chat_template()
        info["chat_template"] = chat_template
    path = folder / TEMPLATE_FILE
    _write_json_atomic(path, info)
    tok_cfg_path = folder / "tokenizer_config.json"
    if tok_cfg_path.is_file():
        tok_cfg = json.loads(tok_cfg_path.read_text(encoding="utf-8"))
        tok_cfg["medalpaca_template"] = template
        tok_cfg["medalpaca_eos_token"] = eos_token
        if chat_template is not None:
            tok_cfg["chat_template"] = chat_template
        _write_json_atomic(tok_cfg_path, tok_cfg)
    if chat_template is not None:
        # transformers 5 keeps the template in chat_template.jinja; both readers must see the same one
        (folder / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    return path


def read_template_metadata(folder: str | Path) -> dict[str, Any]:
    """{"template", "eos_token"[, "chat_template"]} of a trained model folder; {} when absent."""
    try:
        return json.loads((Path(folder) / TEMPLATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- model card


def _data_summary(prepared: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sources = []
    for src in getattr(prepared, "sources", None) or []:
        d = dataclasses.asdict(src) if dataclasses.is_dataclass(src) and not isinstance(src, type) else dict(src)
        sources.append({"path": d.get("source") or d.get("path"), "records": d.get("records"),
                        "weight": d.get("weight")})
    if sources:
        out["sources"] = sources
    train, val = getattr(prepared, "train", None), getattr(prepared, "val", None)
    if train is not None:
        out["train_records"] = len(train)
    out["val_records"] = len(val) if val is not None else 0
    stats = getattr(prepared, "stats", None)
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        stats = dataclasses.asdict(stats)
    if isinstance(stats, Mapping) and stats:
        out["token_stats"] = {k: stats[k] for k in ("mean", "p50", "p95", "max", "truncated_share") if k in stats}
    return out


def _loss_points(run_dir: Path, metrics: Mapping[str, Any]) -> list[tuple[int, float]]:
    """(step, training loss) from the run's events.jsonl, else from the trainer's log history."""
    points: list[tuple[int, float]] = []
    events_file = run_dir / "events.jsonl"
    if events_file.is_file():
        for ev in read_events_file(events_file):
            if isinstance(ev, Metric) and isinstance(ev.values.get("loss"), (int, float)):
                points.append((int(ev.step or 0), float(ev.values["loss"])))
    if not points:
        for row in metrics.get("log_history") or []:
            if isinstance(row.get("loss"), (int, float)) and "step" in row:
                points.append((int(row["step"]), float(row["loss"])))
    return points


def _card_metrics(run_dir: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    from trainer.model_card import curve_summary

    return {"final_train_loss": metrics.get("train_loss"), "final_val_loss": metrics.get("val_loss"),
            "steps": metrics.get("steps"), "duration_s": metrics.get("duration_s"),
            "curve": curve_summary(_loss_points(run_dir, metrics)), "bench": metrics.get("bench"),
            "best": {k: metrics[k] for k in ("best_by", "best_value", "best_step") if k in metrics}}


# --------------------------------------------------------------------------- merge


def _base_dir(config: TrainConfig, base_dir: str | None, writer: EventWriter) -> str:
    return str(base_dir) if base_dir else resolve_base_model(config, writer.emit)


def merge_adapter(base_dir: str | Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Merge the adapter into the full-precision base (inference.hf_model.merge_lora); write safetensors +
    tokenizer to out_dir (atomic)."""
    from transformers import AutoTokenizer

    from medalpaca_desktop.inference.hf_model import merge_lora
    from trainer.fsutil import replace_folder

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}-tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # An 8-bit / 4-bit training base is reloaded as stored (full precision); a quantized folder is refused.
        merged = merge_lora(base_dir, adapter_dir)
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir), trust_remote_code=False)
        tokenizer.save_pretrained(str(tmp))
        copy_sentencepiece_files(tokenizer, tmp)
        for extra in (TEMPLATE_FILE,):
            if (adapter_dir / extra).is_file():
                shutil.copy2(adapter_dir / extra, tmp / extra)
        verify_saved(tmp, adapter=False)
        if json.loads((tmp / "config.json").read_text(encoding="utf-8")).get("quantization_config"):
            raise RuntimeError("the merged model's config still names a quantization")
        del merged
        replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------- GGUF check


def _check_ids(tokenizer: Any, template: str) -> list[list[int]]:
    from medalpaca_desktop.core.chat_protocol import ChatMessage
    from medalpaca_desktop.core.prompts import render_medalpaca

    out = []
    for q in CHECK_PROMPTS:
        if template == "medalpaca":
            text = render_medalpaca([ChatMessage("user", q)])
            out.append(tokenizer(text, add_special_tokens=True)["input_ids"])
        else:
            out.append(tokenizer(q, add_special_tokens=True)["input_ids"])
    return out


def check_gguf_logits(gguf_path: Path, model_dir: Path, template: str = "medalpaca") -> dict[str, Any]:
    """Compare the GGUF's logits (llama.cpp) with the HF model's on a few prompts.

    rel_diff: max |gguf - hf| / max |hf| over all positions; argmax_agreement: the share of
    positions whose top token is the same. Both models load as chat and benchmarks load them.
    """
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from medalpaca_desktop.core.chat_protocol import LoadSpec
    from medalpaca_desktop.inference.hf_model import load_causal_lm
    from medalpaca_desktop.inference.llamacpp import LlamaCppBackend

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    prompts = _check_ids(tokenizer, template)
    model = load_causal_lm(model_dir, dtype=torch.float32, device="cpu").model
    model.eval()
    max_diff = max_ref = 0.0
    same = total = 0
    gguf = LlamaCppBackend(exact_kv_cache=True)  # f32 KV cache: the comparison measures the weights only
    gguf.load(LoadSpec(model=str(gguf_path), backend="llamacpp", n_ctx=max(64, max(len(p) for p in prompts) + 8),
                       n_gpu_layers=0, n_threads=max(1, min(4, os.cpu_count() or 1))), lambda *_: None)
    try:
        for ids in prompts:
            with torch.no_grad():
                ref = model(torch.tensor([ids])).logits[0].float().numpy()
            got = gguf.logits(ids).astype(np.float32)
            max_diff = max(max_diff, float(np.abs(got - ref).max()))
            max_ref = max(max_ref, float(np.abs(ref).max()))
            same += int((got.argmax(-1) == ref.argmax(-1)).sum())
            total += len(ids)
    finally:
        gguf.unload()
    return {"rel_diff": max_diff / max_ref if max_ref else 0.0, "max_abs_diff": max_diff,
            "argmax_agreement": same / total if total else 0.0, "prompts": len(prompts), "positions": total}


def _chat_list_note(gguf: Path) -> str:
    try:
        from medalpaca_desktop.core.settings import load_settings

        folders = [Path(f).expanduser().resolve() for f in load_settings().model_folders]
    except Exception:  # noqa: BLE001 - a note must not fail the run
        folders = []
    target = gguf.resolve()
    for folder in folders:
        if target.is_relative_to(folder):
            return f"{gguf} is in the model folder {folder}: it appears in the chat tab's model list."
    return (f"Wrote {gguf}. To chat with it, add {gguf.parent} to Settings → Model folders; "
            "it then appears in the chat tab's model list.")


# --------------------------------------------------------------------------- the steps


def _fail(writer: EventWriter, errors: list[str], step: str, exc: BaseException,
          folder: Path | None = None) -> None:
    """One error event for a failed after-training step; `folder`: where the step was writing."""
    from medalpaca_desktop.core.disk_full import DISK_FULL_KIND, disk_full_message, is_disk_full

    kind = "export"
    if getattr(exc, "kind", None) == DISK_FULL_KIND:  # the GGUF export's own sentence
        msg = f"{str(exc).rstrip('.')}; the trained model in final/ is kept."
        kind = DISK_FULL_KIND
    elif folder is not None and is_disk_full(exc, folder):
        msg = disk_full_message(folder, f"the {step.lower()} output", kept="the trained model in final/ is kept",
                                then="run the step again")
        kind = DISK_FULL_KIND
    else:
        first = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        msg = f"{step} failed ({first}); the trained model in final/ is kept."
    errors.append(msg)
    writer.emit(Error(message=msg, kind=kind, detail=traceback.format_exc()[-4000:]))


def _verify_after(config: TrainConfig, reference: str, adapter: Path | None, candidate: Path, writer: EventWriter,
                  errors: list[str]) -> dict[str, Any] | None:
    """The run's own benchmark (bench_task, bench_questions) on the trained model and on the merge or export
    (bench.verify); a warning when the result is significantly worse, an after-error when it cannot be checked."""
    from bench.verify import DEFAULT_QUESTIONS, verify

    writer.emit(Progress(stage="Checking the export", message=f"{config.bench_task} on the original and on "
                                                              f"{candidate.name}"))
    try:
        result = verify(reference, str(candidate), config.bench_task, config.bench_questions or DEFAULT_QUESTIONS,
                        candidate.parent / f"{candidate.name}.verify", reference_adapter=str(adapter) if adapter
                        else None, writer=writer, resume=False, seed=config.seed)
    except Exception as exc:  # noqa: BLE001
        _fail(writer, errors, "Checking the export", exc)
        return None
    return {k: result[k] for k in ("n_shared", "acc_a", "acc_b", "diff", "diff_ci", "p_value",
                                   "significantly_worse", "verdict", "out")}


def run_after_training(config: TrainConfig, run_dir: str | Path, final_dir: str | Path, prepared_data: Any,
                       metrics: Mapping[str, Any], writer: EventWriter, *, base_dir: str | None = None
                       ) -> dict[str, Any]:
    """Model card, template metadata, optional merge and GGUF export + check; returns output paths.

    metrics: train_loss, val_loss, steps, duration_s (and log_history, used when the run has
    no events.jsonl). Keys of the result: model_card, template_file, merged, gguf, gguf_check,
    gguf_note, after_errors (one line per failed step; the others still ran where they could).
    """
    run_dir, final_dir = Path(run_dir), Path(final_dir)
    out: dict[str, Any] = {}
    errors: list[str] = []
    template = getattr(prepared_data, "template", None) or config.template
    eos = getattr(prepared_data, "eos_token", None) or ""
    if not eos:
        try:
            tok_cfg = json.loads((final_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
            eos = tok_cfg.get("eos_token") or ""
            eos = eos.get("content", "") if isinstance(eos, dict) else str(eos)
        except (OSError, ValueError):
            eos = ""

    writer.emit(Progress(stage="Writing model card", message=str(final_dir / "README.md")))
    try:
        from trainer.model_card import write_model_card

        summary = _data_summary(prepared_data)
        card_metrics = _card_metrics(run_dir, metrics)
        out["template_file"] = str(write_template_metadata(final_dir, template, eos))
        out["model_card"] = str(write_model_card(final_dir, config, summary, card_metrics, template, eos))
    except Exception as exc:  # noqa: BLE001
        _fail(writer, errors, "Writing the model card", exc, final_dir)
        summary, card_metrics = {}, {}

    adapter = config.is_adapter_method
    merged_dir: Path | None = None
    temp_merged: Path | None = None
    if adapter and (config.merge_adapter or config.export_gguf):
        writer.emit(Progress(stage="Merging adapter", message=f"into the full-precision {config.base_model}"))
        try:
            if config.merge_adapter:
                target = run_dir / MERGED
            else:
                temp_merged = Path(tempfile.mkdtemp(dir=run_dir, prefix=".merge-for-gguf-"))
                target = temp_merged / MERGED
            merged_dir = merge_adapter(_base_dir(config, base_dir, writer), final_dir, target)
            write_template_metadata(merged_dir, template, eos)
            if config.merge_adapter:
                out["merged"] = str(merged_dir)
                write_model_card(merged_dir, config, summary, card_metrics, template, eos)
                if config.bench_task:
                    out["merged_verify"] = _verify_after(config, _base_dir(config, base_dir, writer), final_dir,
                                                         merged_dir, writer, errors)
        except Exception as exc:  # noqa: BLE001
            _fail(writer, errors, "Merging the adapter", exc, run_dir)
            merged_dir = None
    elif not adapter:
        merged_dir = final_dir

    try:
        if config.export_gguf and merged_dir is not None:
            from trainer.export import ExportConfig, export_gguf

            name = run_dir.resolve().name or "model"
            gguf_path = run_dir / f"{name}-{config.export_gguf}.gguf"
            gguf: Path | None = gguf_path
            writer.emit(Progress(stage="Exporting GGUF", message=str(gguf_path)))
            try:
                export_gguf(ExportConfig(model=merged_dir, out=gguf_path, quant=config.export_gguf, overwrite=True),
                            events=writer)
                out["gguf"] = str(gguf_path)
            except Exception as exc:  # noqa: BLE001
                _fail(writer, errors, "Exporting GGUF", exc)
                gguf = None
            if gguf is not None:
                writer.emit(Progress(stage="Checking GGUF", message="comparing llama.cpp's logits with the HF model"))
                try:
                    check = check_gguf_logits(gguf, merged_dir, template)
                    check["quant"] = config.export_gguf
                    out["gguf_check"] = check
                    writer.emit(Metric(step=metrics.get("steps"), values={
                        "gguf_rel_diff": check["rel_diff"], "gguf_argmax_agreement": check["argmax_agreement"]}))
                except Exception as exc:  # noqa: BLE001
                    _fail(writer, errors, "Checking GGUF", exc)
                out["gguf_note"] = _chat_list_note(gguf)
                if config.bench_task:
                    out["gguf_verify"] = _verify_after(config, str(merged_dir), None, gguf, writer, errors)
                writer.emit(Result(data={"gguf": str(gguf), "check": out.get("gguf_check"),
                                         "verify": out.get("gguf_verify"), "note": out["gguf_note"]}))
    finally:
        if temp_merged is not None:
            shutil.rmtree(temp_merged, ignore_errors=True)
    if errors:
        out["after_errors"] = errors
    return out
