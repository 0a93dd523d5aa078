"""Package data: prompt templates, the paper's reference scores, sample data.

Read with importlib.resources so it works from a wheel as well as a checkout.
"""

from __future__ import annotations

from importlib import resources as _resources
from importlib.resources.abc import Traversable


def resource_path(*parts: str) -> Traversable:
    """A file shipped in the `resources` package."""
    node = _resources.files(__name__)
    for part in parts:
        node = node / part
    return node


def read_text(*parts: str) -> str:
    return resource_path(*parts).read_text(encoding="utf-8")
