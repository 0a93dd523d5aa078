"""The `medalpaca` command: chat, train, bench, export, models, devices.

Heavy libraries are imported inside the sub-command that needs them, so
`medalpaca models list` answers in a fraction of a second. Bad input ends with
one line on stderr and exit code 2, never a traceback; every exit code is a
core.jobs.ExitCode. The long jobs (train, bench, export, download) start through
core.worker.run_worker, like the GUI's workers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from medalpaca_desktop import __version__
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.offline import stay_offline

EXPORT_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k")


def _fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> ExitCode:
    print(f"medalpaca: error: {message}", file=sys.stderr)
    return code


def _cmd_models_inspect(args: argparse.Namespace) -> int:
    from medalpaca_desktop.core.model_info import ModelInspectError
    from medalpaca_desktop.core.models import inspect_model

    try:
        info = inspect_model(Path(args.path))
    except ModelInspectError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
    else:
        print(_describe_model(info))
    return ExitCode.OK


def _describe_model(info) -> str:
    from medalpaca_desktop.core.model_info import format_parameters, format_size

    rows = [
        ("Name", info.name),
        ("Path", info.path),
        ("Kind", {"hf": "Hugging Face model", "gguf": "GGUF file", "adapter": "LoRA adapter"}[info.kind]),
        ("Architecture", info.architecture or "-"),
        ("Parameters", format_parameters(info.parameters)),
        ("Weights", info.weight_format or "-"),
        ("Data type", info.dtype or "-"),
        ("Quantization", info.quantization or "none"),
        ("Context length", str(info.context_length or "-")),
        ("Chat template", "yes" if info.has_chat_template else "no"),
        ("Size on disk", format_size(info.size_bytes)),
        ("Source", info.source),
    ]
    if info.kind == "adapter":
        rows.append(("Base model", info.base_model or "-"))
    if info.pickle_weights:
        rows.append(("Safety", "pickle weights: not loaded unless allowed in Settings"))
    if not info.supported:
        rows.append(("Support", "architecture not supported by the app's engines"))
    if info.note:
        rows.append(("Note", info.note))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _cmd_models_list(args: argparse.Namespace) -> int:
    from medalpaca_desktop.core.model_info import format_parameters, format_size
    from medalpaca_desktop.core.models import discover_models
    from medalpaca_desktop.core.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(str(exc))
    folders = [Path(p) for p in settings.model_folders] + [Path(p) for p in args.folder or []]
    from medalpaca_desktop.hub import downloads_dir

    if downloads_dir().is_dir():  # models fetched by `medalpaca download` are always listed
        folders.append(downloads_dir())
    models, problems = discover_models(
        folders,
        scan_hf_cache=settings.scan_hf_cache and not args.no_scan,
        scan_other_apps=settings.scan_other_apps and not args.no_scan,
    )
    if args.json:
        print(json.dumps({"models": [m.to_dict() for m in models],
                          "problems": [p.to_dict() for p in problems]}, indent=2))
        return ExitCode.OK
    if not models:
        print("No models found. Add a folder with `medalpaca models list --folder DIR` or in the app's model manager.")
    for m in models:
        label = f"  [{m.note}]" if m.note else ""
        print(f"{m.name:<40} {m.kind:<7} {m.architecture or '-':<20} {format_parameters(m.parameters):>6} "
              f"{m.quantization or '-':<8} {format_size(m.size_bytes):>9}  {m.path}{label}")
    for p in problems:
        print(f"could not read {p.path}: {p.message}", file=sys.stderr)
    return ExitCode.OK


def _cmd_devices(args: argparse.Namespace) -> int:
    from medalpaca_desktop.core.worker import Worker, run_worker
    from medalpaca_desktop.inference.devices import describe_devices, probe_devices

    if args.json:
        # The GUI's devices probe. Native libraries may print while probing: stdout keeps the JSON alone.
        def job(worker: Worker) -> ExitCode:
            worker.writer.write_raw(json.dumps(probe_devices().to_dict(), indent=2) + "\n")
            return ExitCode.OK

        return run_worker(job, name="devices probe")
    print(describe_devices(probe_devices()))
    return ExitCode.OK


def _cmd_convert(args: argparse.Namespace) -> int:
    from trainer.convert import run_convert_cli

    return run_convert_cli(args.model_dir, args.out, jsonl=args.jsonl)


def _cmd_export(args: argparse.Namespace) -> int:
    from trainer.checkpoints import CheckpointError, model_and_adapter, pick
    from trainer.export import ExportConfig, run_export_cli

    model, adapter = (Path(args.model) if args.model else None), (Path(args.adapter) if args.adapter else None)
    if args.run:
        if args.model or args.adapter:
            print("medalpaca export: give --run (a fine-tune's folder) or --model/--adapter, not both",
                  file=sys.stderr)
            return ExitCode.BAD_INPUT
        try:
            model, adapter = model_and_adapter(pick(args.run, args.checkpoint or "final"))
        except CheckpointError as exc:
            print(f"medalpaca export: {exc}", file=sys.stderr)
            return ExitCode.BAD_INPUT
    elif args.checkpoint:
        print("medalpaca export: --checkpoint picks weights of a --run folder", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if model is None:
        print("medalpaca export: give --model (a Hugging Face folder) or --run (a fine-tune's folder)",
              file=sys.stderr)
        return ExitCode.BAD_INPUT
    config = ExportConfig(
        model=model,
        out=Path(args.out),
        quant=args.quant,
        adapter=adapter,
        overwrite=args.force,
        verify=args.verify or "",
    )
    return run_export_cli(config, jsonl=args.jsonl)


def _cmd_download(args: argparse.Namespace) -> int:
    from medalpaca_desktop.hub.download import run_download_cli

    return run_download_cli(args.repo_id, args.include, args.revision, args.dest, args.list, args.jsonl,
                            repo_type="dataset" if getattr(args, "dataset", False) else "model")


def _cmd_chat(args: argparse.Namespace) -> int:
    from medalpaca_desktop.core.chat_protocol import LoadSpec, SamplingSettings
    from medalpaca_desktop.inference.chat_cli import ChatOptions, run_chat

    sampling = SamplingSettings()
    for name in ("temperature", "top_p", "top_k", "repeat_penalty", "max_tokens", "seed"):
        value = getattr(args, name)
        if value is not None:
            setattr(sampling, name, value)
    sampling.stop = list(args.stop or [])
    spec = LoadSpec(model=args.model, backend=args.backend, adapter=args.adapter, load_in=args.load_in or "none",
                    n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers, n_threads=args.threads,
                    allow_pickle=args.allow_pickle)
    opts = ChatOptions(spec=spec, sampling=sampling, template=args.template, system=args.system,
                       prompt=args.prompt, jsonl=args.jsonl, documents=list(args.docs or []))
    return run_chat(opts)


def _add_chat_parser(sub) -> None:
    from medalpaca_desktop.core.chat_protocol import BACKENDS, TEMPLATES, LoadSpec, SamplingSettings

    h = SamplingSettings.field_help
    chat = sub.add_parser("chat", help="chat with a local model (one answer with --prompt, else interactive)")
    chat.add_argument("--model", required=True, help="a .gguf file or a Hugging Face model folder")
    chat.add_argument("--backend", default="auto", choices=BACKENDS,
                      help="auto: llama.cpp for .gguf files, transformers for folders")
    chat.add_argument("--adapter", help="LoRA adapter folder on top of a Hugging Face model")
    chat.add_argument("--load-in", choices=("8bit", "4bit"), help="load Hugging Face weights 8-bit or 4-bit")
    chat.add_argument("--template", default="chat", choices=TEMPLATES,
                      help="chat: the model's own chat template; medalpaca: the paper's format; raw: no template")
    chat.add_argument("--system", help="system prompt (none by default: only your message is sent)")
    chat.add_argument("--prompt", help="answer this and exit; without it the chat is interactive")
    chat.add_argument("--max-tokens", type=int, help=h("max_tokens"))
    chat.add_argument("--temperature", type=float, help=h("temperature"))
    chat.add_argument("--top-p", type=float, help=h("top_p"))
    chat.add_argument("--top-k", type=int, help=h("top_k"))
    chat.add_argument("--repeat-penalty", type=float, help=h("repeat_penalty"))
    chat.add_argument("--seed", type=int, help=h("seed"))
    chat.add_argument("--stop", action="append", help="end the answer at this text (repeatable)")
    chat.add_argument("--n-ctx", type=int, default=LoadSpec.n_ctx, help="context window in tokens (llama.cpp)")
    chat.add_argument("--n-gpu-layers", type=int, default=LoadSpec.n_gpu_layers,
                      help="GGUF layers offloaded to the GPU; -1 = all, 0 = CPU only")
    chat.add_argument("--threads", type=int, help="CPU threads (default: llama.cpp's choice)")
    chat.add_argument("--allow-pickle", action="store_true", help="allow .bin/.pt/.pth weights (can run code)")
    chat.add_argument("--docs", action="append", metavar="COLLECTION",
                      help="answer from this document collection, citing its passages as [1], [2] (repeatable)")
    chat.add_argument("--jsonl", action="store_true", help="print the chat host's events as JSON lines")
    chat.set_defaults(func=_cmd_chat)


def _add_docs_parser(sub) -> None:
    from medalpaca_desktop.documents.commands import add_docs_arguments, run

    docs = sub.add_parser("docs", help="collections of your documents for grounded chat (add, rescan, search, "
                          "list, files, remove)",
                          description="Index your PDF, DOCX, Markdown, text and HTML files into collections a chat "
                                      "can cite (`medalpaca chat --docs COLLECTION`). Everything stays on this "
                                      "machine, in the app's database.")
    add_docs_arguments(docs)
    docs.set_defaults(func=run)


def _cmd_train(args: argparse.Namespace) -> int:
    """The same job as `python -m trainer run CONFIG.yaml`: events on stdout, logs on stderr."""
    from trainer.__main__ import run_from_args

    return run_from_args(args)


def _add_train_parser(sub) -> None:
    from trainer.__main__ import add_train_arguments

    train = sub.add_parser("train", help="run a fine-tune from a config file (JSON-line events on stdout)",
                           description="Fine-tune a model from a YAML config (see resources/presets). The same "
                                       "job as `python -m trainer run CONFIG.yaml`; progress is printed as "
                                       "JSON-line events, logs go to stderr.")
    add_train_arguments(train)
    train.set_defaults(func=_cmd_train)


def _cmd_bench(args: argparse.Namespace) -> int:
    """One benchmark run from flags: the config is written to OUT/config.yaml, then run in this process."""
    from bench.__main__ import execute
    from bench.config import ConfigError
    from bench.run import config_from_cli

    values = {k: getattr(args, k) for k in vars(args)}
    mapping = {}
    for item in args.map or []:
        key, sep, column = item.partition("=")
        if not sep or not key.strip() or not column.strip():
            return _fail(f"--map {item!r}: write FIELD=COLUMN, e.g. --map question=stem")
        mapping[key.strip()] = column.strip()
    values["mapping"] = mapping or None
    try:
        config = config_from_cli(values).validate(check_paths=True)
    except ConfigError as exc:
        return _fail(str(exc))
    return execute(config, resume=args.resume, jsonl=args.jsonl, prog="medalpaca bench")


def _add_bench_parser(sub) -> None:
    from bench.config import DATASETS, PRESETS, BenchConfig, add_setting_flags

    h = BenchConfig.field_help
    b = sub.add_parser(
        "bench", help="score a model on USMLE-style multiple-choice questions (also: bench rescore / compare)",
        description="Score a local model on USMLE-style questions, the MedAlpaca paper's way (--mode generate) "
                    "or the Open Medical-LLM Leaderboard's (--mode loglikelihood --prompt-style lm-eval). "
                    "Results go to --out: summary.json, items.jsonl, items.csv. Also: `medalpaca bench run "
                    "CONFIG [--resume]`, `medalpaca bench rescore RUN_DIR --rule paper|lenient`, "
                    "`medalpaca bench compare RUN_A RUN_B [--json]`, `medalpaca bench suite --model M --tasks "
                    "multimedqa,usmle --out DIR` (the medical suite), `medalpaca bench table DIR`, "
                    "`medalpaca bench suite-compare DIR MODEL_A MODEL_B`, `medalpaca bench contamination RUN_DIR "
                    "--against TRAIN_FILE` (questions that are in your training data), `medalpaca bench verify "
                    "--reference A --candidate B --questions TASK[:N] --out DIR` (is B as good as A?).")
    b.add_argument("--model", required=True, help=h("model"))
    b.add_argument("--adapter", help=h("adapter"))
    b.add_argument("--task", help=h("task"))
    b.add_argument("--dataset", choices=DATASETS, help=h("dataset"))
    b.add_argument("--data", help=h("data"))
    b.add_argument("--map", action="append", metavar="FIELD=COLUMN", help="table column mapping (repeatable), "
                   "e.g. --map question=stem --map answer=key")
    b.add_argument("--skip-malformed", action="store_true", default=None, help=h("skip_malformed"))
    b.add_argument("--preset", choices=tuple(PRESETS), help="start from a protocol: medalpaca-paper or lm-eval "
                   "(other flags override it)")
    add_setting_flags(b)  # backend, mode, prompt style, sampling, batch size, processes, limit, context ...
    b.add_argument("--label", help=h("label"))
    b.add_argument("--out", required=True, help=h("out"))
    b.add_argument("--resume", action="store_true", help="score only the questions not yet in OUT/items.jsonl")
    b.add_argument("--jsonl", action="store_true", help="print progress as JSON-line events on stdout")
    b.set_defaults(func=_cmd_bench)




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medalpaca",
        description="MedAlpaca Desktop from the terminal: chat, fine-tune, benchmark, export and inspect local models.",
    )
    parser.add_argument("--version", action="version", version=f"medalpaca-desktop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_chat_parser(sub)
    _add_train_parser(sub)
    _add_docs_parser(sub)
    _add_bench_parser(sub)

    exp = sub.add_parser("export", help="write a Hugging Face model (LLaMA, Mistral, Qwen, Gemma, Phi-3; plus "
                                        "LoRA adapter) as GGUF")
    exp.add_argument("--model", help="Hugging Face model directory")
    exp.add_argument("--run", help="a fine-tune's run folder instead of --model/--adapter: its final weights (the "
                                   "best checkpoint when the run kept one), or those --checkpoint picks")
    exp.add_argument("--checkpoint", metavar="best|final|merged|STEP",
                     help="with --run: which saved weights to export (default final)")
    exp.add_argument("--adapter", help="LoRA adapter directory, merged into the model before writing")
    exp.add_argument("--out", required=True, help="the .gguf file to write")
    exp.add_argument("--quant", default="f16", choices=EXPORT_QUANTS, help="weight type of the file (default f16)")
    exp.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    exp.add_argument("--verify", metavar="TASK[:N]",
                     help="after writing, score N questions (default 200) of TASK (a suite task such as "
                          "medqa_4options, or a questions file) on the original and on the file, and warn when "
                          "the file is significantly worse (McNemar p < 0.05)")
    exp.add_argument("--jsonl", action="store_true", help="print progress as JSON-line events on stdout")
    exp.set_defaults(func=_cmd_export)

    conv = sub.add_parser("convert", help="write a safetensors copy of a model that ships pickle weights (.bin)",
                          description="Read each pytorch_model*.bin shard with torch.load(weights_only=True) (only "
                                      "tensors, no code from the file runs; anything else is refused) and write "
                                      "the weights as safetensors into OUT (default: MODEL_DIR-safetensors) beside "
                                      "copies of the config and tokenizer files.")
    conv.add_argument("model_dir", help="the Hugging Face model folder with pytorch_model*.bin")
    conv.add_argument("--out", help="the folder to write (default: MODEL_DIR-safetensors)")
    conv.add_argument("--jsonl", action="store_true", help="print progress as JSON-line events on stdout")
    conv.set_defaults(func=_cmd_convert)

    models = sub.add_parser("models", help="list and inspect local models")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    lst = msub.add_parser("list", help="models in your folders, the Hugging Face cache and other apps' folders")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.add_argument("--folder", action="append", help="also search this folder (repeatable)")
    lst.add_argument("--no-scan", action="store_true", help="skip the Hugging Face cache and other apps' folders")
    lst.set_defaults(func=_cmd_models_list)
    ins = msub.add_parser("inspect", help="metadata of one model, read without loading weights")
    ins.add_argument("path", help="a Hugging Face model directory, adapter directory or .gguf file")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(func=_cmd_models_inspect)

    dl = sub.add_parser("download", help="download a model from the Hugging Face hub (the app's only online step)",
                        description="Download a model by Hugging Face repo id into the app's models folder "
                                    "(resumes a stopped download; checks each file's sha256). The only command "
                                    "that goes online.")
    dl.add_argument("repo_id", help="org/name, e.g. TheBloke/meditron-7B-GGUF")
    dl.add_argument("--include", action="append", metavar="PATTERN",
                    help="only files matching this pattern, e.g. '*Q4_K_M.gguf' (repeatable; default: one Q4_K_M "
                         "GGUF of a GGUF repo, else the model's safetensors, config and tokenizer)")
    dl.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
    dl.add_argument("--dest", help="folder to download into (default: the app's models folder, org--name)")
    dl.add_argument("--list", action="store_true", help="only list the repo's files and sizes; download nothing")
    dl.add_argument("--jsonl", action="store_true", help="print progress as JSON-line events on stdout")
    dl.add_argument("--dataset", action="store_true",
                    help="REPO_ID is a dataset repo (e.g. medalpaca/medical_meadow_medqa): download all its data "
                         "files into the app's datasets folder, org--name")
    dl.set_defaults(func=_cmd_download)

    dev = sub.add_parser("devices", help="GPUs, CPU cores and memory this machine offers")
    dev.add_argument("--json", action="store_true", help="machine-readable output (used by the GUI)")
    dev.set_defaults(func=_cmd_devices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] != ["download"]:
        stay_offline()  # only `medalpaca download` may reach the network
    from bench.__main__ import ACTIONS as BENCH_ACTIONS

    if len(args_list) >= 2 and args_list[0] == "bench" and args_list[1] in BENCH_ACTIONS:
        from bench.__main__ import main as bench_main

        return bench_main(args_list[1:], prog="medalpaca bench", events=False)
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.STOPPED)
    except BrokenPipeError:
        return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
