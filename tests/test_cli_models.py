"""`medalpaca models list / inspect` as a user runs them: a real subprocess each time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_models import truncated_copy, write_gguf, write_hf_dir

from medalpaca_desktop.core.demo_model import DEMO_NAME, demo_model_path

ENV_DROP = ("XDG_DATA_HOME", "XDG_CACHE_HOME", "OLLAMA_MODELS", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")


def run_models(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI with the test's environment (MEDALPACA_DESKTOP_HOME, HF_HOME from conftest)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "medalpaca_desktop", "models", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )


@pytest.fixture(scope="module")
def cli_gguf(tmp_path_factory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("cli") / "tiny-f16.gguf")


def test_inspect_json(cli_gguf):
    result = run_models("inspect", str(cli_gguf), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "gguf" and data["architecture"] == "llama"
    assert data["quantization"] == "F16" and data["context_length"] == 256
    assert data["path"] == str(cli_gguf)


def test_inspect_text_for_hf_dir(tmp_path):
    result = run_models("inspect", str(write_hf_dir(tmp_path / "tiny-llama")))
    assert result.returncode == 0, result.stderr
    assert "Hugging Face model" in result.stdout and "LlamaForCausalLM" in result.stdout
    assert "Chat template   yes" in result.stdout


@pytest.mark.parametrize("make", ["truncated", "text", "missing"])
def test_inspect_bad_input_is_one_line_exit_2(cli_gguf, tmp_path, make):
    path = tmp_path / "bad.gguf"
    if make == "truncated":
        truncated_copy(cli_gguf, path, cli_gguf.stat().st_size - 10)
    elif make == "text":
        path.write_text("just text\n")
    result = run_models("inspect", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medalpaca: error:")
    assert result.stdout == ""


def test_list_json_has_demo_and_folder(cli_gguf, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "mine.gguf").write_bytes(cli_gguf.read_bytes())
    result = run_models("list", "--json", "--folder", str(folder), home=tmp_path / "emptyhome")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    names = [m["name"] for m in data["models"]]
    assert "mine" in names and data["problems"] == []
    if demo_model_path() is not None:
        assert names[0] == DEMO_NAME and data["models"][0]["source"] == "demo"


def test_list_finds_lm_studio_gguf(cli_gguf, tmp_path):
    home = tmp_path / "home"
    lms = home / ".lmstudio" / "models" / "pub" / "Tiny-GGUF"
    lms.mkdir(parents=True)
    (lms / "Tiny-Q4_K_M.gguf").write_bytes(cli_gguf.read_bytes())

    data = json.loads(run_models("list", "--json", home=home).stdout)
    found = {m["name"]: m["source"] for m in data["models"]}
    assert found.get("Tiny-Q4_K_M") == "LM Studio"

    data = json.loads(run_models("list", "--json", "--no-scan", home=home).stdout)
    assert "Tiny-Q4_K_M" not in {m["name"] for m in data["models"]}


def test_list_text_reports_problems_on_stderr(cli_gguf, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.gguf").write_bytes(cli_gguf.read_bytes())
    truncated_copy(cli_gguf, folder / "cut.gguf", 40)
    result = run_models("list", "--folder", str(folder), "--no-scan", home=tmp_path / "h")
    assert result.returncode == 0
    assert "good" in result.stdout and str(folder / "good.gguf") in result.stdout
    assert "could not read" in result.stderr and "cut.gguf" in result.stderr
    assert "Traceback" not in result.stderr
