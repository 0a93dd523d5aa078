"""Documents for grounded chat: text out of each format, passages with offsets, the index kept up to date."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest
from helpers.retrieval_set import write_docx, write_markdown, write_pdf

from medalpaca_desktop.core.payloads import IndexedFile, parse_payload
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.documents.chunks import chunk_pages
from medalpaca_desktop.documents.extract import ExtractError, Page, extract_pages
from medalpaca_desktop.documents.grounding import (
    NOTHING_FOUND,
    Source,
    check_citations,
    grounded_question,
)
from medalpaca_desktop.documents.indexer import index_collection
from medalpaca_desktop.documents.library import Library, LibraryError
from medalpaca_desktop.documents.search import bm25

PAGES = ["Warfarin targets. The INR target is 2.5 for atrial fibrillation.\n\nCheck it weekly at first.",
         "Apixaban is held 48 hours before high bleeding risk surgery.",
         "Idarucizumab reverses dabigatran: 5 g intravenously."]


# ------------------------------------------------------------------ extraction


def test_pdf_pages_are_numbered_as_in_the_file(tmp_path):
    path = tmp_path / "guide.pdf"
    write_pdf(path, "Guide", PAGES)
    pages = extract_pages(path)
    assert [p.number for p in pages] == [1, 2, 3]
    assert "Apixaban is held 48 hours" in pages[1].text and "Apixaban" not in pages[0].text


def test_docx_pages_follow_its_page_breaks(tmp_path):
    path = tmp_path / "guide.docx"
    write_docx(path, "Guide", PAGES)
    pages = extract_pages(path)
    assert [p.number for p in pages] == [1, 2, 3]
    assert pages[0].text.startswith("Guide") and "Idarucizumab" in pages[2].text


def test_markdown_and_text_pages_split_at_form_feeds_and_html_keeps_visible_text(tmp_path):
    md = tmp_path / "notes.md"
    write_markdown(md, "Notes", PAGES)
    assert [p.number for p in extract_pages(md)] == [1, 2, 3]
    plain = tmp_path / "plain.txt"
    plain.write_text("One page only.\n", encoding="utf-8")
    assert extract_pages(plain) == [Page(None, "One page only.")]
    html = tmp_path / "page.html"
    html.write_text("<html><head><title>T</title><style>p{}</style></head><body><h1>Sepsis</h1><p>Give fluids "
                    "&amp; antibiotics.</p><script>alert(1)</script></body></html>", encoding="utf-8")
    (page,) = extract_pages(html)
    assert page.number is None and page.text == "Sepsis\n\nGive fluids & antibiotics."


def test_unreadable_files_say_why(tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a pdf")
    with pytest.raises(ExtractError, match="not a readable PDF"):
        extract_pages(broken)
    fake = tmp_path / "fake.docx"
    fake.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ExtractError, match="not a readable DOCX"):
        extract_pages(fake)
    with pytest.raises(ExtractError, match="not a format the app reads"):
        extract_pages(tmp_path / "scan.tiff")

    from fpdf import FPDF

    blank = FPDF()
    blank.add_page()
    blank.output(str(tmp_path / "scanned.pdf"))
    with pytest.raises(ExtractError, match="holds no text .*OCR"):
        extract_pages(tmp_path / "scanned.pdf")
    locked = FPDF()
    locked.set_encryption(owner_password="owner", user_password="secret")
    locked.add_page()
    locked.set_font("Helvetica", size=10)
    locked.cell(0, 5, "confidential")
    locked.output(str(tmp_path / "locked.pdf"))
    with pytest.raises(ExtractError, match="password-protected"):
        extract_pages(tmp_path / "locked.pdf")


# ------------------------------------------------------------------ passages


def test_passages_keep_their_page_and_offsets_and_never_cross_a_page():
    long_paragraph = " ".join(f"Sentence {i} about dosing in kidney disease." for i in range(80))
    pages = [Page(1, "# Dosing\n\nShort intro.\n\n" + long_paragraph), Page(2, "## Reversal\n\nVitamin K.")]
    chunks = chunk_pages(pages, max_chars=400)
    assert {c.page for c in chunks} == {1, 2}
    for chunk in chunks:
        page = pages[chunk.page - 1]
        assert page.text[chunk.start:chunk.end] == chunk.text
        assert len(chunk.text) <= 400
    assert chunks[0].section == "Dosing" and chunks[-1].section == "Reversal"
    joined = " ".join(c.text for c in chunks if c.page == 1)
    assert all(f"Sentence {i} " in joined for i in range(80))  # nothing lost at the cuts


# ------------------------------------------------------------------ the index


def _library(tmp_path) -> Library:
    return Library(Store(tmp_path / "app.sqlite"))


def test_a_folder_is_indexed_then_kept_up_to_date(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "guide.pdf", "Guide", PAGES)
    write_markdown(folder / "notes.md", "Notes", ["Sepsis: lactate above 2 mmol/L is a red flag."])
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    (folder / "ignored.xyz").write_text("not a document")
    library = _library(tmp_path)
    events = []
    totals = index_collection(library, "Clinic", [str(folder)], emit=events.append)
    assert (totals.indexed, totals.failed, totals.pages) == (2, 1, 4)
    failed = [p for e in events if (p := parse_payload(e.data)) and isinstance(p, IndexedFile) and p.status == "failed"]
    assert [Path(p.path).name for p in failed] == ["broken.pdf"] and "not a readable PDF" in (failed[0].error or "")
    (collection,) = library.collections()
    assert (collection.files, collection.failed, collection.sources) == (2, 1, (str(folder.resolve()),))

    again = index_collection(library, "clinic", [])
    assert (again.indexed, again.unchanged, again.removed) == (0, 3, 0)

    write_markdown(folder / "notes.md", "Notes", ["Sepsis: give antibiotics within one hour."])
    os.utime(folder / "notes.md", (1e9, 1e9))
    write_markdown(folder / "new.md", "New", ["Fever in infants under 3 months needs review."])
    (folder / "guide.pdf").unlink()
    changed = index_collection(library, "Clinic", [])
    assert (changed.indexed, changed.removed, changed.unchanged) == (2, 1, 1)
    coll = library.get("Clinic")
    assert bm25(library, [coll], "lactate red flag") == []
    assert bm25(library, [coll], "antibiotics within one hour")
    assert bm25(library, [coll], "apixaban surgery") == []  # the removed file's passages went with it
    assert int(library.store.read("SELECT count(*) FROM doc_fts")[0][0]) == coll.chunks


def test_touched_but_identical_files_are_not_read_again(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Metformin is held before iodinated contrast.", encoding="utf-8")
    library = _library(tmp_path)
    index_collection(library, "C", [str(folder)])
    os.utime(folder / "a.txt", (2e9, 2e9))
    assert index_collection(library, "C", []).unchanged == 1
    assert library.files(library.get("C"))[0].mtime == 2e9  # recorded: the next scan does not hash it


def test_removing_a_collection_removes_its_index_not_the_files(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "guide.pdf", "Guide", PAGES)
    library = _library(tmp_path)
    index_collection(library, "Gone", [str(folder)])
    index_collection(library, "Kept", [str(folder)])
    library.remove("gone")
    assert [c.name for c in library.collections()] == ["Kept"]
    assert int(library.store.read("SELECT count(*) FROM doc_fts")[0][0]) == library.get("Kept").chunks
    assert (folder / "guide.pdf").is_file()
    with pytest.raises(LibraryError, match="no collection named 'Gone'"):
        library.get("Gone")


def test_a_stop_keeps_the_files_indexed_before_it(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.txt").write_text(f"Document {i} about insulin.", encoding="utf-8")
    library = _library(tmp_path)
    stop = threading.Event()
    seen = []

    def emit(event):
        seen.append(event)
        if len(seen) == 2:
            stop.set()

    totals = index_collection(library, "C", [str(folder)], emit=emit, stop=stop)
    assert totals.indexed == 2 and library.get("C").files == 2
    assert index_collection(library, "C", []).indexed == 3  # the rest on the next scan


def test_a_missing_path_is_refused_before_anything_is_written(tmp_path):
    library = _library(tmp_path)
    with pytest.raises(LibraryError, match="does not exist"):
        index_collection(library, "C", [str(tmp_path / "nowhere")])
    assert library.collections() == []


def test_the_index_passes_sqlite_and_fts5_integrity_checks(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Heparin dosing by weight.", encoding="utf-8")
    library = _library(tmp_path)
    index_collection(library, "C", [str(folder)])
    conn = sqlite3.connect(tmp_path / "app.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.execute("INSERT INTO doc_fts(doc_fts) VALUES ('integrity-check')")  # raises when the index is damaged


# ------------------------------------------------------------------ citations


def _source(n: int) -> Source:
    return Source(chunk_id=n, path=f"/docs/guide{n}.pdf", page=n, section=None, start=0, end=10, text=f"text {n}",
                  collection="C", n=n)


def test_the_question_carries_numbered_sources_or_says_nothing_was_found():
    text = grounded_question("What is the INR target?", [_source(1), _source(2)], ["C"])
    assert "[1] (guide1.pdf, page 1)\ntext 1" in text and "[2] (guide2.pdf, page 2)" in text
    assert text.endswith("Question: What is the INR target?")
    empty = grounded_question("Glaucoma drops?", [], ["C"])
    assert NOTHING_FOUND.format(names="C") in empty and "[1]" not in empty


def test_citations_not_sent_are_flagged():
    sources = [_source(1), _source(2), _source(3)]
    check = check_citations("INR 2.5 [2]. Hold apixaban [1, 3]; see [2-3] and [7]. In [2021] it changed.", sources)
    assert check.cited == [2, 1, 3] and check.unknown == [7] and not check.ok
    assert check_citations("No sources cited.", sources).cited == []
    assert check_citations("Both [1][2].", sources).ok


def test_a_terse_follow_up_is_searched_with_the_question_before_it():
    from medalpaca_desktop.documents.grounding import retrieval_query
    from medalpaca_desktop.documents.search import query_terms

    first = "What INR target applies to a mechanical mitral valve?"
    assert retrieval_query([first], query_terms) == first
    assert retrieval_query([first, "And for children?"], query_terms) == f"{first}\nAnd for children?"
    full = "How long before surgery is apixaban held with normal kidney function?"
    assert retrieval_query([first, full], query_terms) == full


def test_a_folder_that_is_gone_keeps_its_files_until_it_is_back(tmp_path):
    folder = tmp_path / "usb" / "docs"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("Warfarin dosing.", encoding="utf-8")
    sibling = tmp_path / "usb" / "docs2"
    sibling.mkdir()
    (sibling / "b.txt").write_text("Heparin dosing.", encoding="utf-8")
    library = _library(tmp_path)
    index_collection(library, "C", [str(folder), str(sibling)])
    folder.rename(tmp_path / "elsewhere")  # an unplugged drive
    events = []
    totals = index_collection(library, "C", [], emit=events.append)
    assert totals.removed == 0 and library.get("C").files == 2
    assert any("is no longer there" in getattr(e, "message", "") for e in events)
    (sibling / "b.txt").unlink()  # a file removed from a folder that is there is forgotten
    assert index_collection(library, "C", []).removed == 1 and library.get("C").files == 1
