"""Shipped package data is readable through importlib.resources and matches the paper (Han et al. 2023)."""

import json

import yaml

from resources import read_text


def test_medalpaca_template_matches_paper():
    t = json.loads(read_text("prompt_templates", "medalpaca.json"))
    assert t["primer"].startswith("Below is an instruction that describes a task")
    assert (t["instruction"], t["input"], t["output"]) == (
        "\n\n### Instruction:\n", "\n\n### Input:\n", "\n\n### Response:\n")


def test_paper_scores_table():
    scores = yaml.safe_load(read_text("paper_scores.yaml"))
    assert "MedAlpaca paper" in scores["source"]
    assert len(scores["models"]) == 12
    assert scores["models"]["MedAlpaca 13b"] == {"step1": 0.473, "step2": 0.477, "step3": 0.602}
    for row in scores["models"].values():
        assert set(row) == {"step1", "step2", "step3"} and all(0 < v < 1 for v in row.values())
