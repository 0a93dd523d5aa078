"""Suite-wide setup: no network, no real user folders, Qt offscreen.

Tiny-model fixtures live in fixtures_models.py (registered below) so any test
can ask for `tiny_llama_dir`, `tiny_gguf`, `demo_gguf`, ...
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["fixtures_models"]


@pytest.fixture(autouse=True)
def app_home(tmp_path_factory, monkeypatch):
    """Point the app's data/config/cache at a fresh tmp folder for every test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MEDALPACA_DESKTOP_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    return home
