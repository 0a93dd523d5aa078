"""How an answer's citations look: [n] as a link to source n when n was sent, flagged when it was not.

Reads what the answer keeps in its meta (documents.grounding.Source dicts, the retrieval summary and
the citation check), so a chat reopened later shows the same links, whatever the index holds now.
"""

from __future__ import annotations

import html
import re
from typing import Any

from medalpaca_desktop.documents.grounding import CITATION, Source, cited_numbers, unknown_citations_warning

SOURCE_SCHEME = "source"
NOT_SENT = "*(not one of the sources sent)*"


def sources_of(meta: dict[str, Any]) -> list[Source]:
    return [Source.from_dict(s) for s in meta.get("sources") or [] if isinstance(s, dict)]


def link_citations(markdown: str, sources: list[Source]) -> str:
    """The answer's Markdown with each sent [n] a link (source:n) and any other number flagged after it."""
    sent = {s.n for s in sources}
    if not sent:
        return markdown

    def replace(match: re.Match[str]) -> str:
        numbers = cited_numbers(match)
        links = "".join(f"[\\[{n}\\]]({SOURCE_SCHEME}:{n})" if n in sent else f"\\[{n}\\] {NOT_SENT}"
                        for n in numbers)
        return links

    return CITATION.sub(replace, markdown)


def sources_html(meta: dict[str, Any]) -> str:
    """The line under an answer: its sources as links, what it cited that was not sent, or that nothing matched."""
    retrieval = meta.get("retrieval") or {}
    names = ", ".join(retrieval.get("collections") or meta.get("documents") or [])
    if retrieval.get("nothing_found"):
        return (f"<span style='color:#8a6d00'>Nothing in {html.escape(names)} matched this question; no sources "
                "were sent and the model was told so.</span>")
    sources = sources_of(meta)
    if not sources:
        return ""
    check = meta.get("citations") or {}
    cited = set(check.get("cited") or [])
    links = []
    for s in sources:
        style = "" if not check or s.n in cited else " style='color:#888'"
        links.append(f"<a href='{SOURCE_SCHEME}:{s.n}'{style}>[{s.n}] {html.escape(s.where)}</a>")
    text = "Sources: " + " · ".join(links)
    unknown = check.get("unknown") or []
    if unknown:
        text += (f"<br><span style='color:#b3261e'>⚠ {html.escape(unknown_citations_warning(unknown, len(sources)))}"
                 "</span>")
    elif check and not cited:
        text += "<br><span style='color:#8a6d00'>The answer cites none of them: check it against the sources.</span>"
    return text


def retrieval_summary(meta: dict[str, Any]) -> str:
    """For the prompt inspector: what was retrieved from where, and that it is in the text below."""
    retrieval = meta.get("retrieval") or {}
    if not retrieval:
        return ""
    names = ", ".join(retrieval.get("collections") or [])
    how = "BM25 fused with embeddings" if retrieval.get("mode") == "hybrid" else "BM25"
    if retrieval.get("nothing_found"):
        return f"Searched {names} ({how}): nothing matched, and the prompt below tells the model so."
    lines = [f"[{s.n}] {s.where} (passage {s.start}-{s.end})" for s in sources_of(meta)]
    return f"Retrieved from {names} ({how}) and sent in the prompt below:\n" + "\n".join(lines)


def source_number(link: str) -> int | None:
    if not link.startswith(f"{SOURCE_SCHEME}:"):
        return None
    try:
        return int(link.split(":", 1)[1])
    except ValueError:
        return None
