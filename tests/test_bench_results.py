"""Benchmark config, prompts and the run directory read back (no model needed).

BenchConfig (presets, validation, YAML round trip, the command lines the GUI
shows), the two prompt styles, and bench.results: torn items.jsonl lines,
summary shape, rescore with the other rule, paired comparison of two runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.config import (
    PRESET_TITLES,
    PRESETS,
    BenchConfig,
    ConfigError,
    apply_preset,
    bench_command,
    matching_preset,
    user_command,
)
from bench.prompts import INSTRUCTION, build_prompt, lmeval_text, medalpaca_input
from bench.questions import Question

ROOT = Path(__file__).resolve().parents[1]

Q = Question(id="7", step="step1", question="Which vitamin deficiency causes scurvy?",
             options={"A": "Vitamin A", "B": "Vitamin C", "C": "Vitamin D", "D": "Vitamin K"}, gold="B")


# ------------------------------------------------------------------ config


def test_defaults_are_the_paper_protocol_and_every_field_has_help(tmp_path):
    c = BenchConfig()
    assert (c.mode, c.prompt_style, c.rule, c.temperature, c.top_p, c.top_k, c.max_new_tokens) == \
        ("generate", "medalpaca", "paper", 0.1, 0.75, 40, 128)
    assert matching_preset(c) == "medalpaca-paper"
    for name in BenchConfig.__dataclass_fields__:
        assert len(BenchConfig.field_help(name)) > 15, name


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_validates_and_round_trips(tmp_path, preset):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    data = tmp_path / "q.jsonl"
    data.write_text("{}\n")
    c = apply_preset(BenchConfig(model=str(model), data=str(data), out=str(tmp_path / "run")), preset)
    c.validate(check_paths=True)
    assert matching_preset(c) == preset and PRESET_TITLES[preset]
    path = c.save(tmp_path / "run" / "config.yaml")
    assert BenchConfig.load(path) == c
    # A config may name a preset; explicit keys win over it.
    path.write_text(yaml.safe_dump({"preset": "lm-eval", "model": str(model), "data": str(data),
                                    "out": str(tmp_path / "r2"), "batch_size": 3}))
    loaded = BenchConfig.load(path)
    assert (loaded.mode, loaded.prompt_style, loaded.batch_size) == ("loglikelihood", "lm-eval", 3)


@pytest.mark.parametrize("values, message", [
    ({"mode": "multiple"}, "mode: 'multiple' is not one of"),
    ({"temperature": 3.0}, "temperature: 3.0 is above the maximum"),
    ({"model": ""}, "model: give"),
    ({"out": ""}, "out: give"),
    ({"adapter": "/a"}, "adapter: LoRA adapters are applied with the transformers backend"),
    ({"quantization": "4bit"}, "quantization: 8-bit/4-bit loading is for Hugging Face folders"),
])
def test_bad_configs_name_the_field(values, message):
    base = dict(model="/m/model.gguf", data="/d/q.jsonl", out="/o")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        BenchConfig(**{**base, **values}).validate()


def test_config_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        BenchConfig.load(bad)
    bad.write_text("model: /x.gguf\nflavour: sweet\n")
    with pytest.raises(ConfigError, match="flavour: unknown key"):
        BenchConfig.load(bad)
    bad.write_text("model: /nowhere/x.gguf\ndata: /nowhere/q.jsonl\nout: /tmp/x\n")
    with pytest.raises(ConfigError, match="model: /nowhere/x.gguf does not exist"):
        BenchConfig.load(bad)
    with pytest.raises(ConfigError, match="top_k: expected int"):
        BenchConfig.from_dict({"top_k": "many"})


def test_command_lines_for_the_gui(tmp_path):
    cfg = tmp_path / "config.yaml"
    assert bench_command(cfg) == [sys.executable, "-m", "bench", "run", str(cfg)]
    assert bench_command(cfg, resume=True)[-1] == "--resume"
    c = BenchConfig(model="/m/x.gguf", data="/d/my q.jsonl", out="/o", mode="loglikelihood",
                    prompt_style="lm-eval", limit=5, greedy=True, mapping={"question": "stem"})
    line = user_command(c)
    assert line.startswith("medalpaca bench --model /m/x.gguf")
    assert "'/d/my q.jsonl'" in line and "--limit 5" in line and "--greedy" in line
    assert "--map question=stem" in line and "--seed" not in line  # defaults are left out

    # The line a person copies parses back into the same config.
    import shlex

    from bench.run import config_from_cli
    from medalpaca_desktop.cli import build_parser

    args = build_parser().parse_args(shlex.split(line)[1:])
    values = vars(args)
    values["mapping"] = dict(item.split("=", 1) for item in args.map or [])
    assert config_from_cli(values) == c


# ------------------------------------------------------------------ prompts


def test_medalpaca_prompt_is_the_papers():
    p = build_prompt(Q, "generate", "medalpaca")
    assert p.text.startswith("Below is an instruction that describes a task")
    assert p.text.endswith(f"### Instruction:\n{INSTRUCTION}\n\n### Input:\n{medalpaca_input(Q)}\n\n### Response:\n")
    assert medalpaca_input(Q) == ("Which vitamin deficiency causes scurvy?\nA: Vitamin A\nB: Vitamin C\n"
                                  "C: Vitamin D\nD: Vitamin K")
    assert p.stop == ["### Instruction:"] and p.add_special and not p.continuations


def test_lmeval_prompt_is_medqa_4options():
    p = build_prompt(Q, "loglikelihood", "lm-eval")
    assert p.text == lmeval_text(Q) == ("Question: Which vitamin deficiency causes scurvy?\nA. Vitamin A\n"
                                        "B. Vitamin C\nC. Vitamin D\nD. Vitamin K\nAnswer:")
    assert p.continuations == {"A": " A", "B": " B", "C": " C", "D": " D"}
    assert p.choices == {"A": "A", "B": "B", "C": "C", "D": "D"}  # acc_norm divides by 1: equals acc


def test_chat_template_wraps_both_styles_without_a_second_bos():
    from medalpaca_desktop.core.prompts import ModelPromptInfo

    info = ModelPromptInfo(chat_template="{{ bos_token }}{% for m in messages %}<u>{{ m['content'] }}</u>"
                                         "{% endfor %}<a>", bos_token="<s>", eos_token="</s>")
    gen = build_prompt(Q, "generate", "medalpaca", info)
    assert gen.template == "chat" and gen.text.startswith("<s><u>" + INSTRUCTION) and not gen.add_special
    ll = build_prompt(Q, "loglikelihood", "lm-eval", info)
    assert ll.text == f"<u>{lmeval_text(Q)}</u><a>"  # the scorer adds the tokenizer's own BOS


# ------------------------------------------------------------------ run directory


def _items(outputs: dict[str, str]) -> list[dict]:
    rows = []
    for i, (gold, out) in enumerate(outputs.items()):
        rows.append({"id": str(i), "step": "step1" if i < 3 else "step2", "question": f"q{i}",
                     "options": {"A": "Aspirin", "B": "Heparin", "C": "Warfarin"}, "gold": gold[0],
                     "output": out, "pred": None, "correct": False, "prompt": "p"})
    return rows


def _write_run(run_dir: Path, items: list[dict], mode: str = "generate") -> None:
    from bench.results import item_line, rescore_items

    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"mode": mode, "rule": "paper", "model": "/m/x.gguf",
                                                         "label": run_dir.name, "data": "/d"}))
    if mode == "generate":
        items = rescore_items(items, "paper")
    (run_dir / "items.jsonl").write_text("".join(item_line(it) for it in items))
    (run_dir / "summary.json").write_text(json.dumps({"n_total": len(items), "complete": True, "record": {}}))


OUTPUTS = {"A1": "A: Aspirin", "B2": "The answer is B", "C3": "(C) Warfarin", "A4": "b) Heparin", "B5": "",
           "C6": "C"}


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    from bench.results import read_items

    _write_run(tmp_path / "r", _items(OUTPUTS))
    path = tmp_path / "r" / "items.jsonl"
    good = path.read_bytes()
    path.write_bytes(good + b'{"id": "9", "step": "st')
    assert [it["id"] for it in read_items(tmp_path / "r")] == ["0", "1", "2", "3", "4", "5"]
    assert path.read_bytes() != good  # reading alone changes nothing
    read_items(tmp_path / "r", repair=True)
    assert path.read_bytes() == good


def test_rescore_switches_rule_without_a_model(tmp_path):
    from bench.results import load_run, rescore_run

    run = tmp_path / "gen"
    _write_run(run, _items(OUTPUTS))
    paper = load_run(run)
    assert [it["pred"] for it in paper.items] == ["A", None, "C", None, None, "C"]  # "(C)" reads C, "b)" not
    summary = rescore_run(run, "lenient")
    lenient = load_run(run)
    assert lenient.config["rule"] == "lenient" and summary["rule"] == "lenient"
    assert [it["pred"] for it in lenient.items] == ["A", "B", "C", "B", None, "C"]
    assert [it["correct"] for it in lenient.items] == [True, True, True, False, False, True]
    overall = summary["scores"]["overall"]
    assert (overall["n"], overall["correct"]) == (6, 4) and overall["ci_low"] < 4 / 6 < overall["ci_high"]
    assert summary["scores_by_rule"]["paper"]["overall"]["correct"] == 3
    assert set(summary["scores"]) == {"step1", "step2", "overall"}
    assert summary["unparseable"] == ["4"]
    header = (run / "items.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["id", "step", "gold", "pred", "correct"] and "output" in header
    back = rescore_run(run, "paper")
    assert back["scores"]["overall"]["correct"] == 3


def test_rescore_refuses_a_loglikelihood_run(tmp_path):
    from bench.results import RunError, rescore_run

    _write_run(tmp_path / "ll", _items(OUTPUTS), mode="loglikelihood")
    with pytest.raises(RunError, match="loglikelihood run has no parsed answers"):
        rescore_run(tmp_path / "ll", "lenient")
    with pytest.raises(RunError, match="no such run folder"):
        rescore_run(tmp_path / "nowhere", "paper")


def test_compare_is_paired_on_shared_ids(tmp_path):
    from bench.results import compare_runs

    a = _items(OUTPUTS)
    b = _items({"A1": "B", "B2": "B", "C3": "C", "A4": "A", "B5": "B", "C6": "A"})
    _write_run(tmp_path / "a", a)
    _write_run(tmp_path / "b", b[:5])  # b lacks question 5
    data = compare_runs(tmp_path / "a", tmp_path / "b")
    assert data["n_shared"] == 5
    # paper rule, shared ids 0-4: a right on 0 and 2; b right on 1, 2, 3, 4
    assert data["acc_a"] == pytest.approx(2 / 5) and data["acc_b"] == pytest.approx(4 / 5)
    assert data["b"] == 1 and data["c"] == 3 and 0 < data["p_value"] <= 1
    assert data["run_a"]["label"] == "a" and data["run_b"]["n"] == 5


def test_light_modules_import_no_heavy_library():
    code = ("import sys, bench.config, bench.results, bench.prompts, bench.record; "
            "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'peft', 'datasets') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
