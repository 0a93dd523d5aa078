"""The retrieval test set as real files: tests/data/retrieval's texts written as PDF, DOCX and Markdown.

The texts are the project's own (fictional documents written for these tests); each document's
`kind` says which format it is written in, one PDF or DOCX page per text page (Markdown: a form
feed between pages), so a question's answering page can be checked against what retrieval returns.
Used by tests/test_documents_retrieval.py and perf/retrieval_eval.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "retrieval"
SUFFIX = {"pdf": ".pdf", "docx": ".docx", "md": ".md"}


@dataclass(frozen=True)
class Question:
    question: str
    doc: str | None
    page: int | None


def documents() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((DATA / "docs").glob("*.json"))}


def questions() -> list[Question]:
    rows = [json.loads(line) for line in (DATA / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return [Question(r["question"], r["doc"], r["page"]) for r in rows]


def write_pdf(path: Path, title: str, pages: list[str]) -> None:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_margins(18, 18)
    for number, text in enumerate(pages, start=1):
        pdf.add_page()
        pdf.set_font("Helvetica", size=8)
        pdf.cell(0, 5, f"{title} - page {number}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(0, 5, text)
    pdf.output(str(path))


def write_docx(path: Path, title: str, pages: list[str]) -> None:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for number, text in enumerate(pages):
        if number:
            document.add_page_break()
        for paragraph in text.split("\n\n"):
            document.add_paragraph(paragraph)
    document.save(str(path))


def write_markdown(path: Path, title: str, pages: list[str]) -> None:
    path.write_text(f"# {title}\n\n" + "\n\n\f\n".join(pages) + "\n", encoding="utf-8")


def build(folder: Path, repeat: int = 1) -> dict[str, Path]:
    """Write every document into `folder` (`repeat` > 1: that many copies, for the speed figures); name -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, doc in documents().items():
        for copy in range(repeat):
            stem = name if copy == 0 else f"{name}_copy{copy}"
            path = folder / f"{stem}{SUFFIX[doc['kind']]}"
            {"pdf": write_pdf, "docx": write_docx, "md": write_markdown}[doc["kind"]](path, doc["title"], doc["pages"])
            if copy == 0:
                written[name] = path
    return written
