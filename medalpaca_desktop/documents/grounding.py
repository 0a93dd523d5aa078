"""The question as the model reads it with numbered sources, and the check of what an answer cites.

Light (standard library only), shared by the chat host that writes the prompt and the GUI and CLI
that show the answer: a citation [n] is shown as a link only when source n was sent with the
question; any other number is flagged, never silently dropped or pointed somewhere else.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from medalpaca_desktop.documents.passage import Passage


@dataclass(frozen=True)
class Source(Passage):
    """Source n of an answer: the passage sent, kept with the answer so a citation resolves after re-indexing."""

    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Source:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


INSTRUCTION = ("Answer the question using only the numbered sources below. After each statement, cite the source "
               "it comes from by its number in square brackets, like [1]. If the sources do not answer the "
               "question, say that the documents do not cover it.")

NOTHING_FOUND = ("No passage in the attached documents ({names}) matches this question. Say that the documents "
                 "do not cover it; do not cite any source.")


def grounded_question(question: str, sources: list[Source], collections: list[str]) -> str:
    """The user's turn as sent to the model: the instruction, the numbered passages, then the question."""
    if not sources:
        return f"{NOTHING_FOUND.format(names=', '.join(collections) or 'none')}\n\nQuestion: {question}"
    blocks = [f"[{s.n}] ({s.where})\n{s.text.strip()}" for s in sources]
    return f"{INSTRUCTION}\n\nSources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"


#: [1], [1, 2], [1][2], [1-3], [1–3]; not [a], not a year like [2021] (numbers over 99 are never sources).
CITATION = re.compile(r"\[(\d{1,2}(?:\s*[,;\-\u2013]\s*\d{1,2})*)\]")


def cited_numbers(match: re.Match[str]) -> list[int]:
    numbers: list[int] = []
    for part in re.split(r"\s*[,;]\s*", match.group(1)):
        bounds = re.split(r"\s*[\-\u2013]\s*", part)
        if len(bounds) == 2 and bounds[0] and bounds[1] and int(bounds[0]) <= int(bounds[1]) <= int(bounds[0]) + 20:
            numbers.extend(range(int(bounds[0]), int(bounds[1]) + 1))
        else:
            numbers.extend(int(b) for b in bounds if b)
    return numbers


@dataclass(frozen=True)
class CitationCheck:
    cited: list[int]  # the sent sources the answer cites, in order of first citation
    unknown: list[int]  # numbers the answer cites that were not sent

    @property
    def ok(self) -> bool:
        return not self.unknown

    def to_dict(self) -> dict[str, Any]:
        return {"cited": self.cited, "unknown": self.unknown}


def unknown_citations_warning(unknown: list[int], sent: int) -> str:
    """The one sentence for an answer citing numbers that were not sent (the chat and `medalpaca chat --docs`)."""
    numbers = ", ".join(f"[{n}]" for n in unknown)
    one = len(unknown) == 1
    return (f"The answer cites {numbers}, which {'was' if one else 'were'} not among the {sent} sources sent: "
            f"do not trust what it attributes to {'it' if one else 'them'}.")


def check_citations(answer: str, sources: list[Source]) -> CitationCheck:
    sent = {s.n for s in sources}
    cited: list[int] = []
    unknown: list[int] = []
    for match in CITATION.finditer(answer):
        for n in cited_numbers(match):
            target = cited if n in sent else unknown
            if n not in target:
                target.append(n)
    return CitationCheck(cited, unknown)


#: A question with fewer content words than this is read as a follow-up: the previous question joins the search.
FOLLOW_UP_WORDS = 4


def retrieval_query(questions: list[str], content_words: Any) -> str:
    """What to search for: the last question, with the one before it when the last is a terse follow-up.

    `questions` are the user's turns, oldest first; `content_words(text)` gives a text's search words
    (documents.search.query_terms), passed in so this module stays free of the index.
    """
    last = questions[-1] if questions else ""
    if len(content_words(last)) < FOLLOW_UP_WORDS and len(questions) > 1:
        return f"{questions[-2]}\n{last}"
    return last


def sources_from(passages: list[Passage]) -> list[Source]:
    """Numbered sources (1, 2, ...) of documents.library.Passage objects, in retrieval order."""
    return [Source(**dataclasses.asdict(p), n=n) for n, p in enumerate(passages, start=1)]
