"""The model card every finished fine-tune gets (trainer/model_card.py)."""

from __future__ import annotations

from trainer.config import TrainConfig
from trainer.model_card import (
    BENCHMARK_HEADING,
    NO_RESULTS,
    WIKIDOC_NOTE,
    append_benchmark_results,
    curve_summary,
    read_card_metadata,
    write_model_card,
)

TEMPLATE = "medalpaca"
EOS = "</s>"


def config(**kw) -> TrainConfig:
    base = dict(base_model="medalpaca/medalpaca-7b", data=["data/medical_meadow_wikidoc.json", "data/anki.json"],
                output_dir="runs/med-lora", method="lora")
    base.update(kw)
    return TrainConfig(**base).validate()


DATA = {"sources": [{"path": "data/medical_meadow_wikidoc.json", "records": 67704},
                    {"path": "data/anki.json", "records": 33955}],
        "train_records": 91493, "val_records": 10166,
        "token_stats": {"mean": 141.2, "p95": 250, "max": 612, "truncated_share": 0.031}}
METRICS = {"final_train_loss": 0.912, "final_val_loss": 1.034, "steps": 2145, "duration_s": 7384,
           "curve": [(0, 2.5), (500, 1.4), (1000, 1.1), (1500, 0.98), (2145, 0.91)]}


def test_card_has_front_matter_and_every_section(tmp_path):
    path = write_model_card(tmp_path, config(), DATA, METRICS, TEMPLATE, EOS)
    assert path == tmp_path / "README.md"
    text = path.read_text()
    meta = read_card_metadata(tmp_path)
    assert meta["base_model"] == "medalpaca/medalpaca-7b" and meta["library_name"] == "peft"
    assert "medical" in meta["tags"]
    assert meta["medalpaca"] == {"template": "medalpaca", "eos_token": "</s>", "method": "lora",
                                 "base_model": "medalpaca/medalpaca-7b"}
    for heading in ("## Base model", "## Training data", "## Method and hyperparameters", "## Prompt template",
                    "## Training", "## Intended use and limitations", BENCHMARK_HEADING):
        assert heading in text, heading
    assert "67,704" in text and "33,955" in text and "91,493" in text
    assert "| learning_rate | 2e-05 |" in text and "| lora_r | 8 |" in text and "q_proj, v_proj" in text
    assert "Not a medical device" in text and "hallucinate" in text
    assert WIKIDOC_NOTE in text and "30 %" in text
    assert "2h 03m 04s" in text and "| Loss | 2.5 | 1.4 | 1.1 | 0.98 | 0.91 |" in text
    assert text.rstrip().endswith(NO_RESULTS)


def test_full_finetune_without_wikidoc_and_a_local_base(tmp_path):
    cfg = config(method="full", base_model="/models/tiny-llama", data=["data/sample.jsonl"])
    write_model_card(tmp_path, cfg, {"sources": ["data/sample.jsonl"]}, {"curve": {0: 2.0, 100: 1.0}}, "chat",
                     "<|im_end|>")
    text = (tmp_path / "README.md").read_text()
    meta = read_card_metadata(tmp_path)
    assert "base_model" not in meta and meta["library_name"] == "transformers"  # the hub field wants a repo id
    assert meta["medalpaca"]["base_model"] == "/models/tiny-llama" and meta["medalpaca"]["eos_token"] == "<|im_end|>"
    assert "30 %" not in text and "| lora_r |" not in text


def test_benchmark_results_are_appended_and_kept(tmp_path):
    write_model_card(tmp_path, config(), DATA, METRICS, TEMPLATE, EOS)
    append_benchmark_results(tmp_path, [{"benchmark": "USMLE Step 1", "metric": "accuracy", "score": 0.297,
                                         "n": 92, "date": "2026-01-02"}])
    append_benchmark_results(tmp_path / "README.md", [{"benchmark": "MedQA | 4 options", "metric": "acc",
                                                       "value": 0.41, "n": 1273, "date": "2026-01-03"}])
    text = (tmp_path / "README.md").read_text()
    assert NO_RESULTS not in text
    section = text[text.index(BENCHMARK_HEADING):]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert rows[0].startswith("| Date | Benchmark") and len(rows) == 4
    assert rows[2] == "| 2026-01-02 | USMLE Step 1 | accuracy | 0.297 | 92 | – |"
    assert "MedQA \\| 4 options" in rows[3]
    assert read_card_metadata(tmp_path)["library_name"] == "peft"  # front matter untouched

    write_model_card(tmp_path, config(), DATA, METRICS, TEMPLATE, EOS)  # rewritten: the scores stay
    again = (tmp_path / "README.md").read_text()
    assert "| 2026-01-02 | USMLE Step 1 |" in again and NO_RESULTS not in again


def test_append_to_a_card_without_the_section(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("# someone else's card\n\n## Usage\n\ntext\n")
    append_benchmark_results(card, [{"benchmark": "USMLE Step 2", "metric": "accuracy", "score": 0.5, "n": 10}])
    text = card.read_text()
    assert text.startswith("# someone else's card") and "## Usage" in text
    assert text.index(BENCHMARK_HEADING) > text.index("## Usage") and "| USMLE Step 2 |" in text


def test_curve_summary_picks_the_nearest_logged_steps():
    points = [(s, 3.0 - s / 100) for s in range(0, 101, 10)]
    assert curve_summary(points) == {0: 3.0, 25: 2.8, 50: 2.5, 75: 2.3, 100: 2.0}  # ties: the earlier step
    assert curve_summary([]) == {}


def test_library_name_follows_the_folder(tmp_path):
    """final/ holds an adapter (peft) even when the run also writes a merged model (transformers)."""
    from trainer.config import TrainConfig
    from trainer.model_card import read_card_metadata, write_model_card

    cfg = TrainConfig(base_model="org/base", data=["a.jsonl"], output_dir=str(tmp_path), method="lora",
                      merge_adapter=True)
    final, merged = tmp_path / "final", tmp_path / "merged"
    final.mkdir()
    merged.mkdir()
    (final / "adapter_config.json").write_text("{}")
    (merged / "config.json").write_text("{}")
    for folder, expected in ((final, "peft"), (merged, "transformers")):
        write_model_card(folder, cfg, {}, {}, "medalpaca", "</s>")
        assert read_card_metadata(folder)["library_name"] == expected
