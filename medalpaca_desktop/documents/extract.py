"""Text out of a user's file, page by page, with the libraries made for each format.

PDF through pypdf (one page per PDF page), DOCX through python-docx (pages as Word last laid them
out, from its rendered page breaks, else from hard page breaks), HTML through the standard library's
parser, Markdown and plain text as they are (a form feed starts a new page, as `pr` and many exports
write them). A file that cannot be read raises ExtractError with the reason a person can act on.
"""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

#: The formats a collection indexes, by suffix; anything else in a folder is skipped (not an error).
SUFFIXES: dict[str, str] = {
    ".pdf": "pdf", ".docx": "docx", ".md": "markdown", ".markdown": "markdown", ".txt": "text",
    ".text": "text", ".html": "html", ".htm": "html",
}

#: Files larger than this are refused with a reason rather than read into memory.
MAX_FILE_BYTES = 200 * 1024 * 1024


class ExtractError(ValueError):
    """A file whose text cannot be read; the message says why (shown beside the file in the list)."""


@dataclass(frozen=True)
class Page:
    """One page's text; `number` is 1-based, None where the format has no pages (Markdown, HTML)."""

    number: int | None
    text: str


def file_kind(path: Path) -> str | None:
    return SUFFIXES.get(path.suffix.lower())


def extract_pages(path: Path) -> list[Page]:
    """The file's pages with text; ExtractError when it cannot be read or holds no text at all."""
    kind = file_kind(path)
    if kind is None:
        raise ExtractError(f"{path.suffix or 'files without a suffix'} is not a format the app reads "
                           f"(it reads {', '.join(sorted(set(SUFFIXES)))})")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ExtractError(f"cannot be opened ({exc.strerror or exc})") from exc
    if size > MAX_FILE_BYTES:
        raise ExtractError(f"is {size // (1024 * 1024)} MB; files over {MAX_FILE_BYTES // (1024 * 1024)} MB "
                           "are not indexed")
    try:
        pages = {"pdf": _pdf, "docx": _docx, "html": _html}.get(kind, _text)(path)
    except ExtractError:
        raise
    except OSError as exc:
        raise ExtractError(f"cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # a parser's own error on a broken file is the reason
        raise ExtractError(_unreadable(kind, path, exc)) from exc
    pages = [Page(p.number, _clean(p.text)) for p in pages]
    if not any(p.text for p in pages):
        hint = " (a scanned PDF needs OCR before its text can be searched)" if kind == "pdf" else ""
        raise ExtractError(f"holds no text{hint}")
    return pages


def _unreadable(kind: str, path: Path, exc: Exception) -> str:
    """'is not a readable PDF file: damaged, or not a PDF (Stream has ended unexpectedly)'."""
    name = {"pdf": "PDF", "docx": "DOCX", "html": "HTML", "markdown": "Markdown"}.get(kind, "text")
    if kind == "docx" and not zipfile.is_zipfile(path):
        return ("is not a readable DOCX file: damaged, or not a Word .docx document (an older .doc file must be "
                "saved as .docx first)")
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return f"is not a readable {name} file: damaged, or not a {name} ({detail})"


def _clean(text: str) -> str:
    """Normalised white space, paragraphs (blank lines) kept: offsets are into this text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _pdf(path: Path) -> list[Page]:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its repair notes on a damaged file are not for a person

    reader = PdfReader(path)
    if reader.is_encrypted:
        try:
            reader.decrypt("")
        except Exception as exc:
            raise ExtractError("is password-protected; save an unprotected copy to index it") from exc
    try:
        return [Page(i + 1, page.extract_text() or "") for i, page in enumerate(reader.pages)]
    except FileNotDecryptedError as exc:
        raise ExtractError("is password-protected; save an unprotected copy to index it") from exc


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _docx(path: Path) -> list[Page]:
    import docx

    document = docx.Document(str(path))
    body = document.element.body
    rendered = any(True for _ in body.iter(f"{_W}lastRenderedPageBreak"))
    pages: list[list[str]] = [[]]
    for block in body.iterchildren():
        if block.tag == f"{_W}p":
            _docx_paragraph(block, pages, rendered)
        elif block.tag == f"{_W}tbl":
            for row in block.iter(f"{_W}tr"):
                cells = ["".join(t.text or "" for t in cell.iter(f"{_W}t")) for cell in row.iter(f"{_W}tc")]
                pages[-1].append(" | ".join(c.strip() for c in cells))
    return [Page(i + 1, "\n\n".join(p for p in parts if p.strip())) for i, parts in enumerate(pages)]


def _docx_paragraph(paragraph, pages: list[list[str]], rendered: bool) -> None:
    """Append the paragraph's text, starting a page at each break Word laid out (or, unrendered, each hard one)."""
    text: list[str] = []
    for node in paragraph.iter():
        if node.tag == f"{_W}t":
            text.append(node.text or "")
        elif node.tag == f"{_W}tab":
            text.append("\t")
        elif node.tag == f"{_W}br" and node.get(f"{_W}type") != "page":
            text.append("\n")
        elif (rendered and node.tag == f"{_W}lastRenderedPageBreak") or (
                not rendered and node.tag == f"{_W}br" and node.get(f"{_W}type") == "page"):
            if text:
                pages[-1].append("".join(text))
                text = []
            if pages[-1]:
                pages.append([])
    pages[-1].append("".join(text))


def _text(path: Path) -> list[Page]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    if "\x00" in text[:4096]:
        raise ExtractError("looks like a binary file, not text")
    parts = text.split("\f")
    if len(parts) == 1:
        return [Page(None, text)]
    return [Page(i + 1, part) for i, part in enumerate(parts)]


class _HTMLText(HTMLParser):
    """Visible text of an HTML page: script, style and head left out, blocks on their own lines."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
                        "table", "ul", "ol", "pre", "blockquote", "dd", "dt", "hr", "header", "footer"})
    HIDDEN = frozenset({"script", "style", "head", "noscript", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(re.sub(r"\s+", " ", data))


def _html(path: Path) -> list[Page]:
    parser = _HTMLText()
    parser.feed(path.read_bytes().decode("utf-8", errors="replace"))
    parser.close()
    return [Page(None, "".join(parser.parts))]
