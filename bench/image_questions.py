"""Which USMLE self-assessment questions need an image, so text-only models are not scored on them.

The paper scored text-only questions. Its repository left out, by question
number, Step 1: 27, Step 2: 10 and Step 3: 13 questions; the project carries
those numbers with their source in resources/usmle_image_questions.yaml
(`shipped_lists()`). A folder that has its own question_with_images.json is
read instead (`read_folder_file()`), because that file travels with the
questions and so always matches them.

question_with_images.json is read in the shapes it plausibly takes:
``{"step1": [4, 7, ...], ...}`` (numbers or {"no": ...} objects per Step; keys
"step1", "Step 1", "1" or "step1.json"), or a list of objects each with a step
and a "no". Anything else is an `ImageListError` naming the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medalpaca_desktop.core.records import parse_json

__all__ = [
    "FOLDER_FILE",
    "STEPS",
    "ImageListError",
    "ImageLists",
    "lists_for_folder",
    "read_folder_file",
    "shipped_lists",
]

STEPS: tuple[str, ...] = ("step1", "step2", "step3")
FOLDER_FILE = "question_with_images.json"
_RESOURCE = "usmle_image_questions.yaml"


class ImageListError(ValueError):
    """A question_with_images.json this module cannot read."""


@dataclass(frozen=True)
class ImageLists:
    """Question numbers to leave out, per Step, and where they came from (shown in run records)."""

    steps: dict[str, frozenset[int]]
    source: str
    """"shipped: kbressem/medAlpaca eval/eval_models.ipynb @ commit" or the folder file's path."""
    details: dict[str, Any] = field(default_factory=dict)

    def excluded(self, step: str, number: int | str) -> bool:
        try:
            return int(number) in self.steps.get(step, frozenset())
        except (TypeError, ValueError):
            return False

    def counts(self) -> dict[str, int]:
        return {step: len(self.steps.get(step, ())) for step in STEPS}


def shipped_lists() -> ImageLists:
    """The paper repository's exclusion lists, as carried in resources/ (with repository, path, commit)."""
    from resources import read_text

    data = yaml.safe_load(read_text(_RESOURCE))
    src = data["source"]
    steps = {step: frozenset(int(n) for n in data["steps"][step]) for step in STEPS}
    label = f"shipped list: {src['repository']} {src['path']} @ {src['commit'][:12]}"
    return ImageLists(steps=steps, source=label, details=dict(src))


def _step_key(key: Any) -> str | None:
    """"step1", "Step 1", "1", "step1.json", 1 -> "step1"; None when it names no Step 1-3."""
    match = re.fullmatch(r"\s*(?:step[\s_-]*)?([123])(?:\.json)?\s*", str(key), flags=re.IGNORECASE)
    return f"step{match.group(1)}" if match else None


def _number(item: Any) -> int | None:
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return item
    if isinstance(item, str) and item.strip().isdecimal() and len(item.strip()) <= 18:  # not '²', not 5000 digits
        return int(item)
    if isinstance(item, dict):
        for key in ("no", "number", "id"):
            if key in item:
                return _number(item[key])
    return None


def read_folder_file(path: str | Path) -> ImageLists:
    """Parse a question_with_images.json (see the module docstring for the shapes read)."""
    path = Path(path)
    try:
        data = parse_json(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageListError(f"{path}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ImageListError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
    steps: dict[str, set[int]] = {step: set() for step in STEPS}
    if isinstance(data, dict):
        for key, items in data.items():
            step = _step_key(key)
            if step is None or not isinstance(items, list):
                raise ImageListError(f"{path}: expected Step keys (step1, step2, step3) with lists of question "
                                     f"numbers, got key {key!r}")
            for item in items:
                number = _number(item)
                if number is None:
                    raise ImageListError(f"{path}: {key}: {item!r} is not a question number")
                steps[step].add(number)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            step = _step_key(item.get("step")) if isinstance(item, dict) and "step" in item else None
            number = _number(item)
            if step is None or number is None:
                raise ImageListError(f"{path}: item {index + 1} needs a 'step' (1-3) and a question number 'no'")
            steps[step].add(number)
    else:
        raise ImageListError(f"{path}: expected an object keyed by Step or a list, got {type(data).__name__}")
    return ImageLists(steps={s: frozenset(v) for s, v in steps.items()}, source=str(path))


def lists_for_folder(folder: str | Path) -> ImageLists:
    """The folder's question_with_images.json when it has one, else the shipped lists."""
    candidate = Path(folder) / FOLDER_FILE
    return read_folder_file(candidate) if candidate.is_file() else shipped_lists()
