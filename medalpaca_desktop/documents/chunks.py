"""Pages into passages small enough to put several in a prompt, each knowing its page and offsets.

A passage never crosses a page, so a citation names one page; it is packed from whole paragraphs
up to `max_chars` (a paragraph longer than that is cut at sentence ends, then at spaces). Offsets
are into the page's text as extract.extract_pages returns it, so the side view can show the
passage in its page. Markdown headings are kept as the passage's section.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from medalpaca_desktop.documents.extract import Page

#: About 150-250 words: four or five fit a 2k-token prompt with room for the question and answer.
MAX_CHARS = 1000
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Chunk:
    page: int | None
    section: str | None
    start: int
    end: int
    text: str


def _paragraphs(text: str) -> Iterator[tuple[int, int]]:
    for match in re.finditer(r"\S(?:.*?\S)?(?=\n\s*\n|\Z)", text, flags=re.S):
        yield match.start(), match.end()


def _pieces(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """(start, end) spans of at most max_chars, cut at sentence ends, else at white space."""
    while end - start > max_chars:
        window = text[start:start + max_chars]
        cut = max((m.end() for m in re.finditer(r"[.!?;:]\s", window)), default=0)
        if cut < max_chars // 3:
            cut = window.rfind(" ") + 1 or max_chars
        yield start, start + cut
        start += cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        yield start, end


def chunk_pages(pages: list[Page], max_chars: int = MAX_CHARS) -> list[Chunk]:
    chunks: list[Chunk] = []
    section: str | None = None
    for page in pages:
        text = page.text
        span: tuple[int, int] | None = None
        span_section = section
        for p_start, p_end in _paragraphs(text):
            heading = _HEADING.match(text[p_start:p_end].split("\n", 1)[0])
            if heading:
                section = heading.group(1)
            for s, e in _pieces(text, p_start, p_end, max_chars):
                if span is not None and e - span[0] <= max_chars and not heading:
                    span = (span[0], e)
                    continue
                if span is not None:
                    chunks.append(Chunk(page.number, span_section, span[0], span[1], text[span[0]:span[1]]))
                span, span_section, heading = (s, e), section, None
        if span is not None:
            chunks.append(Chunk(page.number, span_section, span[0], span[1], text[span[0]:span[1]]))
    return chunks
