"""BM25 retrieval on the project's retrieval test set: it must not get worse than when it landed.

Four fictional clinic documents (two PDFs, a DOCX, a Markdown file; tests/data/retrieval) and 40
questions, each with the one page that answers it, plus 4 questions none of them answers. Measured
when it landed (perf/README.md, perf/retrieval_eval.py): recall@5 0.975, MRR 0.905, and nothing
retrieved for any of the 4 off-topic questions.
"""

from __future__ import annotations

from pathlib import Path

from helpers.retrieval_set import build, questions

from medalpaca_desktop.core.store import Store
from medalpaca_desktop.documents.indexer import index_collection
from medalpaca_desktop.documents.library import Library
from medalpaca_desktop.documents.search import bm25

RECALL_AT_5_FLOOR = 0.95
MRR_FLOOR = 0.85


def test_bm25_recall_at_5_and_mrr_hold_and_off_topic_questions_find_nothing(tmp_path):
    build(tmp_path / "docs")
    library = Library(Store(tmp_path / "app.sqlite"))
    totals = index_collection(library, "clinic", [str(tmp_path / "docs")])
    assert (totals.indexed, totals.failed, totals.pages) == (4, 0, 19)
    collection = library.get("clinic")
    found = reciprocal = answerable = 0
    off_topic_hits = []
    for q in questions():
        hits = bm25(library, [collection], q.question, k=5)
        passages = library.passages([h.chunk_id for h in hits])
        ranked = [(Path(passages[h.chunk_id].path).stem, passages[h.chunk_id].page) for h in hits]
        if q.doc is None:
            off_topic_hits += ranked
            continue
        answerable += 1
        if (q.doc, q.page) in ranked:
            found += 1
            reciprocal += 1 / (ranked.index((q.doc, q.page)) + 1)
    assert answerable == 40
    assert found / answerable >= RECALL_AT_5_FLOOR, f"recall@5 {found / answerable:.3f}"
    assert reciprocal / answerable >= MRR_FLOOR, f"MRR {reciprocal / answerable:.3f}"
    assert off_topic_hits == []
