"""One multiple-choice question, the unit every dataset reader produces and every scorer consumes.

Kept free of any format detail so USMLE folders, MedQA JSONL, tables and saved
HF datasets all end up as the same object, and a run directory can store a
question and read it back (`to_dict` / `from_dict`) without the source file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LETTERS", "Question"]

#: Option letters in the order datasets use them (MedQA has A..E, USMLE up to I).
LETTERS: tuple[str, ...] = tuple("ABCDEFGHIJ")


@dataclass
class Question:
    """A multiple-choice question with its gold letter and where it came from."""

    id: str
    """The dataset's own id (realidx / id / no), else the 0-based position in the file, as text."""
    step: str
    """"step1"/"step2"/"step3" (USMLE), "step1"/"step2&3" (MedQA), "" when unknown."""
    question: str
    options: dict[str, str]
    """Ordered letters ("A", "B", ...) to option text."""
    gold: str
    """The correct letter; always one of `options`."""
    source: str = ""
    """The file the question was read from."""
    line: int | None = None
    """1-based line in a JSONL/CSV file; None for JSON lists and saved datasets."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def gold_text(self) -> str:
        return self.options.get(self.gold, "")

    def where(self) -> str:
        """"file line N" or "file" for messages."""
        return f"{self.source} line {self.line}" if self.line is not None else self.source

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "step": self.step, "question": self.question, "options": dict(self.options),
                "gold": self.gold, "source": self.source, "line": self.line, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Question:
        return cls(id=str(data["id"]), step=str(data.get("step") or ""), question=str(data["question"]),
                   options={str(k): str(v) for k, v in dict(data["options"]).items()},
                   gold=str(data["gold"]), source=str(data.get("source") or ""),
                   line=data.get("line"), meta=dict(data.get("meta") or {}))
