"""BM25 over a collection's passages with SQLite's FTS5: retrieval that needs no model at all.

The query's words (Porter-stemmed by the index, common English words left out) are OR-ed, FTS5
ranks by BM25, and a passage only counts as relevant when the words it shares with the question
carry enough of the question's weight (IDF over the collection): a question the documents do not
cover then finds nothing, instead of the passages that merely share "the patient" or "dose".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from medalpaca_desktop.documents.library import Collection, Library, collection_token

#: A passage is relevant when the question words it holds carry at least this share of their IDF weight.
MIN_COVERAGE = 0.2
#: How much a match in the file's name counts against one in the passage (bm25() column weight).
TITLE_WEIGHT = 0.5
#: Candidates BM25 ranks before the coverage check (and the pool fused with dense hits).
CANDIDATES = 50

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just me more most my no nor not now of off on once only or other our
out over own same she should so some such than that the their them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your yours
patient patients please tell explain describe give know use used using
""".split())

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float  # BM25 (higher is better) or the fused score
    coverage: float  # the share of the question's IDF weight this passage holds


def query_terms(question: str) -> list[str]:
    """The question's content words, lower-case, once each, in order."""
    words = [w.casefold() for w in _WORD.findall(question)]
    terms = [w for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]
    return list(dict.fromkeys(terms))


def _match(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _within(collections: list[Collection]) -> str:
    return "coll : (" + " OR ".join(collection_token(c.id) for c in collections) + ")"


def bm25(library: Library, collections: list[Collection], question: str, k: int = 5,
         min_coverage: float = MIN_COVERAGE) -> list[Hit]:
    """The `k` best relevant passages for `question` in `collections`, best first (none when nothing is relevant)."""
    terms = query_terms(question)
    if not terms or not collections:
        return []
    store = library.store
    within = _within(collections)
    # bm25() weights per column: the passage, the file's title (a little), the collection marker (nothing)
    rows = store.read(f"SELECT rowid, -bm25(doc_fts, 1.0, {TITLE_WEIGHT}, 0.0) FROM doc_fts WHERE doc_fts MATCH ? "
                      f"ORDER BY bm25(doc_fts, 1.0, {TITLE_WEIGHT}, 0.0) LIMIT {CANDIDATES}",
                      (f"{within} AND ({' OR '.join(_match(t) for t in terms)})",))
    if not rows:
        return []
    total = sum(c.chunks for c in collections)
    weights: dict[str, float] = {}
    holders: dict[str, set[int]] = {}
    for term in terms:
        holders[term] = {int(r[0]) for r in store.read("SELECT rowid FROM doc_fts WHERE doc_fts MATCH ?",
                                                       (f"{within} AND {_match(term)}",))}
        df = len(holders[term])
        weights[term] = math.log(1.0 + (total - df + 0.5) / (df + 0.5))  # BM25's IDF, never negative
    weight = sum(weights.values()) or 1.0
    hits = []
    for chunk_id, score in rows:
        coverage = sum(w for t, w in weights.items() if int(chunk_id) in holders[t]) / weight
        if coverage >= min_coverage:
            hits.append(Hit(int(chunk_id), float(score), coverage))
    return hits[:k]


def bm25_pool(library: Library, collections: list[Collection], question: str,
              min_coverage: float = MIN_COVERAGE) -> list[Hit]:
    """Every relevant BM25 candidate (up to CANDIDATES), for fusion with dense hits."""
    return bm25(library, collections, question, k=CANDIDATES, min_coverage=min_coverage)
