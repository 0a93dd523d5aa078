"""One indexed passage and where it is: what retrieval returns and what a citation points to.

Light (standard library only): the index, the chat host, the CLI and the GUI share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Passage:
    chunk_id: int
    path: str
    page: int | None
    section: str | None
    start: int
    end: int
    text: str
    collection: str

    @property
    def title(self) -> str:
        return re.split(r"[\\/]", self.path)[-1]

    @property
    def where(self) -> str:
        """'guide.pdf, page 3' / 'notes.md, section Fluids' / 'notes.txt'."""
        if self.page is not None:
            return f"{self.title}, page {self.page}"
        if self.section:
            return f"{self.title}, section {self.section}"
        return self.title
