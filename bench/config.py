"""BenchConfig: one benchmark run, read from and written to YAML (light: the GUI imports it).

Validated before anything heavy is imported, with one-line errors that name the
field. Field help doubles as the Benchmark tab's tooltips. The exact config is
saved in the run directory, so `python -m bench run RUN_DIR/config.yaml`
reproduces (or resumes) the run. Presets are data: the MedAlpaca paper's
protocol and the Open Medical-LLM Leaderboard's (lm-eval medqa_4options).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medalpaca_desktop.core.typed_config import (
    ConfigError,
    check_all_limits,
    coerce_value,
    fields_of,
    read_yaml_mapping,
    save_yaml_atomic,
    short_repr,
)
from medalpaca_desktop.core.typed_config import config_field as _f

MODES: tuple[str, ...] = ("generate", "loglikelihood")
PROMPT_STYLES: tuple[str, ...] = ("medalpaca", "lm-eval")
RULES: tuple[str, ...] = ("paper", "lenient")  # bench.answers.RULES (kept here so the config stays light)
BACKENDS: tuple[str, ...] = ("auto", "llamacpp", "hf")
QUANTIZATIONS: tuple[str, ...] = ("none", "8bit", "4bit")
DATASETS: tuple[str, ...] = ("auto", "usmle", "medqa", "table", "hf")


@dataclass
class BenchConfig:
    """A benchmark run. Defaults are the MedAlpaca paper's protocol (Han et al. 2023, kbressem/medAlpaca eval/)."""

    model: str = _f("", "The model to score: a .gguf file or a Hugging Face model folder.")
    adapter: str = _f("", "Optional LoRA adapter folder on top of a Hugging Face model (transformers only).")
    backend: str = _f("auto", "auto: llama.cpp for .gguf files, transformers for folders.", choices=BACKENDS)
    quantization: str = _f("none", "Load a Hugging Face model's weights in 8-bit or 4-bit (bitsandbytes) to save "
                                   "memory (transformers only).", choices=QUANTIZATIONS, group="compute")
    task: str = _f("", "A task of the medical suite (medqa_4options, medmcqa, pubmedqa, mmlu_anatomy, ..., usmle): "
                       "its downloaded questions and lm-eval's prompt for it; empty: your own file in data.")
    dataset: str = _f("auto", "Question format: usmle (self-assessment folder: step1.json ...), medqa (MedQA "
                              "JSONL), table (CSV/TSV/JSONL with a column mapping), hf (saved Hugging Face "
                              "dataset); auto detects it.", choices=DATASETS)
    data: str = _f("", "The questions: a USMLE self-assessment folder, a MedQA .jsonl file, a CSV/TSV/JSONL "
                       "table or a saved Hugging Face dataset folder.")
    mapping: dict[str, str] = _f(help="Table columns: question, options (or A, B, C ...), answer, id, step "
                                      "(e.g. {question: stem, answer: key}).", factory=dict, group="advanced")
    skip_malformed: bool = _f(False, "Skip records that cannot be read (they are listed) instead of stopping.",
                              group="advanced")
    mode: str = _f("generate", "generate: the model writes an answer that is parsed (the paper's protocol); "
                               "loglikelihood: each option's log-likelihood after the prompt (the leaderboards' "
                               "way; no parsing).", choices=MODES)
    prompt_style: str = _f("medalpaca", "medalpaca: the paper's template and instruction; lm-eval: "
                                        "\"Question: ...\\nA. ...\\nAnswer:\" as lm-evaluation-harness's "
                                        "medqa_4options.", choices=PROMPT_STYLES)
    rule: str = _f("paper", "Headline scoring rule for generated answers: paper (the answer starts with the "
                            "right letter) or lenient (also \"(B)\", \"The answer is B\", the option's text). "
                            "Both are recorded.", choices=RULES)
    apply_chat_template: bool = _f(False, "Wrap each prompt in the model's own chat template (instruct "
                                          "models).")
    temperature: float = _f(0.1, "Sampling temperature (the paper repository's default 0.1).", minimum=0.0,
                            maximum=2.0, group="sampling")
    top_p: float = _f(0.75, "Nucleus sampling threshold (repository default 0.75).", minimum=0.0, maximum=1.0,
                      group="sampling")
    top_k: int = _f(40, "Only the k most likely tokens are considered (repository default 40).", minimum=0,
                    maximum=1000, group="sampling")
    greedy: bool = _f(False, "Always pick the most likely token (ignores temperature, top-p, top-k).",
                      group="sampling")
    max_new_tokens: int = _f(128, "Longest generated answer in tokens (the paper: 128).", minimum=1,
                             maximum=4096, group="sampling")
    seed: int = _f(42, "Random seed; question i is sampled with seed + i, so a resumed run gives the same "
                       "answers as an uninterrupted one.", minimum=0, maximum=2**31 - 1, group="sampling")
    num_processes: int = _f(1, "Processes that score shares of the questions at once (accelerate launch): one "
                                 "per GPU; on a CPU they split the cores.", minimum=1, maximum=64, group="compute")
    batch_size: int = _f(8, "Questions per forward pass (transformers: in generate mode a finished answer's place "
                            "goes to the next question; llama.cpp answers and scores one at a time). Lower it if "
                            "the GPU runs out of memory.", minimum=1, maximum=512, group="compute")
    limit: int = _f(0, "Score only the first N questions (0 = all).", minimum=0)
    sample: int = _f(0, "Score a random choice of N questions, drawn with the seed (the same N every time; "
                        "0 = no choice). The fine-tune's in-loop benchmark and the export check choose so.",
                     minimum=0)
    out: str = _f("", "Run folder: config, events, per-question results and the summary are written here.")
    label: str = _f("", "Display name of the model in tables and charts (default: the model's file name).")
    n_ctx: int = _f(4096, "Context window in tokens (llama.cpp; capped at what the model was trained for).",
                    minimum=64, maximum=1_048_576, group="compute")
    gpu_layers: int = _f(-1, "GGUF layers offloaded to the GPU; -1 = all, 0 = CPU only.", minimum=-1,
                         group="compute")

    # ------------------------------------------------------------------ helpers

    @classmethod
    def field_help(cls, name: str) -> str:
        return str(_fields()[name].metadata.get("help", ""))

    def ensure_row(self, store: Any) -> int:
        """This run's eval_runs row (found by its resolved run folder, created if missing), for worker and GUI alike."""
        return int(store.ensure_eval_run(
            name=self.display_label, run_dir=str(Path(self.out).expanduser().resolve()),
            model_path=str(Path(self.model).expanduser().resolve()), model_label=self.display_label,
            scoring=self.mode, dataset=str(Path(self.data_path()).expanduser().resolve()), config=self.to_dict()))

    @property
    def display_label(self) -> str:
        """The label, else the model's file or folder name."""
        return label_for(self.model, self.label)

    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "llamacpp" if self.model.lower().endswith(".gguf") else "hf"

    def validate(self, check_paths: bool = False) -> BenchConfig:
        """Raise ConfigError (one line, naming the field) for a config that cannot run.

        `check_paths` also checks that the model, adapter and data exist (the runner does;
        a GUI form may validate before the files are chosen).
        """
        check_all_limits(self)
        if not self.model:
            raise ConfigError("model: give a .gguf file or a Hugging Face model folder")
        if self.task:
            from bench.tasks import TaskError, get_task

            try:
                get_task(self.task)
            except TaskError as exc:
                raise ConfigError(f"task: {exc}") from None
        elif not self.data:
            raise ConfigError("data: give the questions (a USMLE folder, a MedQA .jsonl file or a table), or a task")
        if not self.out:
            raise ConfigError("out: give the folder the run is written to")
        if self.resolved_backend() == "llamacpp":
            if self.adapter:
                raise ConfigError("adapter: LoRA adapters are applied with the transformers backend; merge and "
                                  "export the adapter to GGUF first, or use a Hugging Face model folder")
            if self.quantization != "none":
                raise ConfigError("quantization: 8-bit/4-bit loading is for Hugging Face folders; a GGUF file "
                                  "is already quantized")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.mapping.items()):
            raise ConfigError("mapping: give column names as text, e.g. {question: stem}")
        if check_paths:
            for name in ("model", "adapter", "data"):
                value = getattr(self, name)
                if value and not Path(value).expanduser().exists():
                    raise ConfigError(f"{name}: {value} does not exist")
            out = Path(self.out).expanduser()
            if out.exists() and not out.is_dir():
                raise ConfigError(f"out: {self.out} is a file, not a folder")
        return self

    def task_spec(self) -> Any:
        """The suite task (bench.tasks.TaskSpec) this run scores, or None for the user's own file."""
        if not self.task:
            return None
        from bench.tasks import get_task

        return get_task(self.task)

    def data_path(self) -> str:
        """Where the questions are read from: `data`, else the task's download folder."""
        if self.data or not self.task:
            return self.data
        return str(self.task_spec().folder())

    def sampling(self) -> dict[str, Any]:
        """The sampling settings as recorded (generate mode)."""
        if self.greedy:
            return {"greedy": True, "temperature": 0.0, "max_new_tokens": self.max_new_tokens}
        return {"greedy": False, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed, "seed_per_question": "seed + position"}

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        if not isinstance(data, dict):
            raise ConfigError("the config must be a YAML mapping of keys to values")
        known = _fields()
        data = dict(data)
        preset = data.pop("preset", None)
        unknown = sorted(set(data) - set(known), key=str)  # YAML keys may be numbers or null
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown key (known keys: {', '.join(known)})")
        base: dict[str, Any] = {}
        if preset is not None:
            if not isinstance(preset, str) or preset not in PRESETS:
                raise ConfigError(f"preset: {short_repr(preset)} is not one of {', '.join(PRESETS)}")
            base = dict(PRESETS[preset])
        base.update(data)
        return cls(**{name: _coerce(name, known[name], value) for name, value in base.items()})

    @classmethod
    def load(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> BenchConfig:
        """Read YAML, apply overrides (field -> value), validate (paths too)."""
        data = read_yaml_mapping(path)
        data.update(overrides or {})
        return cls.from_dict(data).validate(check_paths=True)

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename)."""
        return save_yaml_atomic(self.to_dict(), path)


def label_for(model: str, label: str = "") -> str:
    """A run's display name: its label, else the model's file name (without .gguf) or folder name."""
    if label:
        return label
    name = Path(str(model).rstrip("/\\")).name
    return (name[:-5] if name.lower().endswith(".gguf") else name) or "model"


#: Protocols as data: name -> the fields they set. Display names in PRESET_TITLES.
PRESETS: dict[str, dict[str, Any]] = {
    "medalpaca-paper": {"mode": "generate", "prompt_style": "medalpaca", "rule": "paper",
                        "apply_chat_template": False, "temperature": 0.1, "top_p": 0.75, "top_k": 40,
                        "greedy": False, "max_new_tokens": 128},
    "lm-eval": {"mode": "loglikelihood", "prompt_style": "lm-eval", "apply_chat_template": False},
}
PRESET_TITLES: dict[str, str] = {
    "medalpaca-paper": "MedAlpaca paper",
    "lm-eval": "Open Medical-LLM Leaderboard (lm-eval)",
}
PRESET_HELP: dict[str, str] = {
    "medalpaca-paper": "Generate an answer with the MedAlpaca template (temperature 0.1, top-p 0.75, top-k 40, "
                       "128 new tokens) and score it when it starts with the right letter "
                       "(kbressem/medAlpaca eval/).",
    "lm-eval": "Compare the log-likelihoods of \" A\"..\" D\" after \"Question: ...\\nAnswer:\" "
               "(lm-evaluation-harness medqa_4options; acc and acc_norm).",
}


def apply_preset(config: BenchConfig, name: str) -> BenchConfig:
    """A copy of `config` with the preset's fields set."""
    if name not in PRESETS:
        raise ConfigError(f"preset: {name!r} is not one of {', '.join(PRESETS)}")
    return dataclasses.replace(config, **PRESETS[name])


def matching_preset(config: BenchConfig) -> str | None:
    """The preset whose fields the config has, if any (for the GUI's preset box)."""
    for name, values in PRESETS.items():
        if all(getattr(config, k) == v for k, v in values.items()):
            return name
    return None


# ------------------------------------------------------------------ command lines


def bench_command(config_path: str | Path, *, resume: bool = False, python: str | None = None) -> list[str]:
    """`python -m bench run CONFIG [--resume]`: what the GUI starts."""
    cmd = [python or sys.executable, "-m", "bench", "run", str(config_path)]
    if resume:
        cmd.append("--resume")
    return cmd


#: config field -> CLI flag of `medalpaca bench` (the flags whose value differs from the default are shown).
CLI_FLAGS: dict[str, str] = {
    "model": "--model", "adapter": "--adapter", "backend": "--backend", "quantization": "--quantization",
    "task": "--task", "dataset": "--dataset", "data": "--data", "skip_malformed": "--skip-malformed", "mode": "--mode",
    "prompt_style": "--prompt-style", "rule": "--rule", "apply_chat_template": "--apply-chat-template",
    "temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k", "greedy": "--greedy",
    "max_new_tokens": "--max-new-tokens", "seed": "--seed", "batch_size": "--batch-size",
    "num_processes": "--num-processes", "limit": "--limit", "sample": "--sample",
    "label": "--label", "n_ctx": "--n-ctx", "gpu_layers": "--gpu-layers", "out": "--out",
}


#: The protocol and compute settings one run takes as flags: `medalpaca bench` and `bench suite` alike.
SETTING_FLAGS: tuple[str, ...] = ("backend", "quantization", "mode", "prompt_style", "rule", "apply_chat_template",
                                  "temperature", "top_p", "top_k", "greedy", "max_new_tokens", "seed", "batch_size",
                                  "num_processes", "limit", "sample", "n_ctx", "gpu_layers")


def add_setting_flags(parser: Any) -> None:
    """The SETTING_FLAGS on an argparse parser, built from the fields (help, choices, type); unset = None."""
    for name in SETTING_FLAGS:
        f = _fields()[name]
        kwargs: dict[str, Any] = {"dest": name, "help": f.metadata.get("help", "")}
        if isinstance(f.default, bool):
            kwargs.update(action="store_true", default=None)
        else:
            kwargs["type"] = type(f.default)
            if f.metadata.get("choices"):
                kwargs["choices"] = tuple(f.metadata["choices"])
        parser.add_argument(CLI_FLAGS[name], **kwargs)


def user_command(config: BenchConfig, *, jsonl: bool = False) -> str:
    """The same run as a person types it: `medalpaca bench --model ... --out ...` (copyable)."""
    defaults = BenchConfig()
    cmd = ["medalpaca", "bench"]
    always = {"model", "dataset", "data", "mode", "prompt_style", "out"}
    for name, flag in CLI_FLAGS.items():
        value = getattr(config, name)
        if name not in always and value == getattr(defaults, name):
            continue
        if isinstance(value, bool):
            if value:
                cmd.append(flag)
            continue
        cmd += [flag, str(value)]
    for key, column in config.mapping.items():
        cmd += ["--map", f"{key}={column}"]
    if jsonl:
        cmd.append("--jsonl")
    return shlex.join(cmd)


# ------------------------------------------------------------------ internals


def _fields() -> dict[str, dataclasses.Field]:
    return fields_of(BenchConfig)


def _coerce(name: str, f: dataclasses.Field, value: Any) -> Any:
    return coerce_value(name, f, value)
