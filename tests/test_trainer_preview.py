"""`python -m trainer preview`: the wizard's data report, from real files and a real tokenizer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from trainer.config import TrainConfig
from trainer.preview import histogram, parse_problem, preview

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample_data" / "medical_instructions.jsonl"


def _config(base: Path, data: list[str], **extra) -> TrainConfig:
    return TrainConfig(base_model=str(base), data=data, **extra)


def test_command_prints_the_report_as_json(tiny_llama_dir, tmp_path):
    cfg = _config(tiny_llama_dir, [str(SAMPLE)]).save(tmp_path / "preview.yaml")  # no output_dir: not needed
    proc = subprocess.run([sys.executable, "-m", "trainer", "preview", str(cfg), "--json", "--rows", "3"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["error_total"] == 0 and result["errors"] == []
    assert result["records"] == 120
    assert result["sources"] == [{"source": str(SAMPLE), "path": str(SAMPLE), "format": "JSON Lines",
                                  "records": 120, "columns": ["instruction", "input", "output"], "mapping": {}}]
    assert len(result["rows"]) == 3
    row = result["rows"][0]
    assert row["where"] == f"{SAMPLE} line 1"
    assert row["prompt"].endswith("### Response:\n") and "What is tachycardia?" in row["prompt"]
    assert row["answer"].startswith("Tachycardia is")
    assert row["prompt_masked"] is True and 0 < row["masked_tokens"] < row["tokens"]
    stats = result["stats"]
    assert stats["count"] == 120 and stats["max_length"] == 256
    assert stats["truncated_share"] == round(stats["truncated"] / 120, 4)
    longer = sum(c for c, lo in zip(result["histogram"]["counts"], result["histogram"]["edges"]) if lo >= 256)
    assert longer <= stats["truncated"]  # bins that start past max length hold only cut examples
    assert sum(result["histogram"]["counts"]) == 120
    assert len(result["histogram"]["edges"]) == len(result["histogram"]["counts"]) + 1


def test_record_errors_name_file_and_line_and_good_records_still_show(tiny_llama_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = {"instruction": "Define fever.", "input": "", "output": "A raised body temperature."}
    bad.write_text("\n".join([json.dumps(good), "{not json", json.dumps({"instruction": "x"}),
                              json.dumps(good)]) + "\n", encoding="utf-8")
    result = preview(_config(tiny_llama_dir, [str(bad)]))
    assert result["ok"] is False
    assert result["error_total"] == 2
    lines = [(e["source"], e["line"]) for e in result["errors"]]
    assert lines == [(str(bad), 2), (str(bad), 3)]
    assert "not valid JSON" in result["errors"][0]["message"]
    assert "'output' is missing" in result["errors"][1]["message"]
    assert result["records"] == 2 and len(result["rows"]) == 2  # the valid ones are still previewed


def test_missing_file_and_csv_mapping(tiny_llama_dir, tmp_path):
    table = tmp_path / "qa.csv"
    table.write_text("question,answer\nWhat is a fever?,A raised temperature.\n", encoding="utf-8")
    result = preview(_config(tiny_llama_dir, [str(tmp_path / "nope.jsonl"), str(table)]))
    assert result["error_total"] == 2
    assert result["errors"][0]["line"] is None and "no such file" in result["errors"][0]["message"]
    assert "no column 'instruction'" in result["errors"][1]["message"]
    csv_source = result["sources"][1]
    assert csv_source["format"] == "CSV" and csv_source["columns"] == ["question", "answer"]

    mapped = f"{table}?instruction=question&output=answer"
    result = preview(_config(tiny_llama_dir, [mapped]))
    assert result["ok"] is True and result["records"] == 1
    assert result["sources"][0]["mapping"] == {"instruction": "question", "output": "answer"}
    assert "What is a fever?" in result["rows"][0]["prompt"]
    assert result["rows"][0]["where"] == f"{mapped} line 2"


def test_truncation_share_and_train_on_inputs(tiny_llama_dir):
    result = preview(_config(tiny_llama_dir, [str(SAMPLE)], max_length=40, train_on_inputs=True), rows=2)
    assert result["stats"]["truncated_share"] == 1.0  # every sample example is longer than 40 tokens
    assert all(row["truncated"] for row in result["rows"])
    assert all(row["prompt_masked"] is False and row["masked_tokens"] == 0 for row in result["rows"])


def test_bad_config_is_one_line_and_exit_code_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("epochs: [1, 2]\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "trainer", "preview", str(cfg), "--json"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: epochs:") and proc.stdout == ""


def test_missing_base_model_is_reported_not_raised(tmp_path):
    result = preview(_config(tmp_path / "no-model", [str(SAMPLE)]))
    assert result["ok"] is False and result["records"] == 120
    assert "does not exist" in result["tokenizer_error"]


def test_histogram_and_problem_parsing():
    data = histogram([1, 5, 10, 300], max_length=256, bins=3)
    assert data == {"edges": [0, 100, 200, 300], "counts": [3, 0, 1]}
    assert parse_problem("a b.csv line 7: 'output' is empty") == {
        "source": "a b.csv", "line": 7, "unit": "line", "message": "a b.csv line 7: 'output' is empty"}
    assert parse_problem("x.json record 3: bad")["line"] == 3
    assert parse_problem("x.jsonl: the file is empty")["line"] is None


def test_gguf_base_uses_the_files_own_tokenizer(demo_gguf):
    """The demo model is a GGUF file: its tokenizer is rebuilt from the file (no de-quantizing for a preview)."""
    result = preview(_config(demo_gguf, [str(SAMPLE)]), rows=1)
    assert result["ok"] is True and result["tokenizer_error"] is None
    assert result["rows"][0]["eos"] == "<|im_end|>"  # SmolLM2's end token, from the GGUF vocabulary
    assert result["stats"]["truncated"] == 0 and 50 < result["stats"]["mean"] < 150
