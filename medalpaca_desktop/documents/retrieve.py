"""The passages for a question: BM25 alone, or fused with dense retrieval where a collection has an embedding model.

Fusion is reciprocal rank fusion (Cormack et al. 2009, k = 60): a passage's score is the sum of
1 / (60 + rank) over the lists it is in, so neither list's raw scores need calibrating. A dense hit
must still be similar enough to the question (`min_similarity`) to count: an unrelated question
finds nothing in either list, and the model is told so. Worker side (the chat host, the CLI).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medalpaca_desktop.documents.embed import Embedder, from_rows, load_embedder
from medalpaca_desktop.documents.library import Collection, Library
from medalpaca_desktop.documents.passage import Passage
from medalpaca_desktop.documents.search import CANDIDATES, bm25_pool

RRF_K = 60
#: Cosine similarity a dense hit needs; below it a passage is not about the question.
MIN_SIMILARITY = 0.35
TOP_K = 4


@dataclass
class Retrieval:
    passages: list[Passage]
    mode: str  # "bm25" or "hybrid"
    collections: list[str] = field(default_factory=list)

    @property
    def nothing_found(self) -> bool:
        return not self.passages


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[int]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda item: (-scores[item], item))


class Retriever:
    """Retrieval over one Library, keeping each embedding model loaded between questions."""

    def __init__(self, library: Library, min_similarity: float = MIN_SIMILARITY) -> None:
        self.library = library
        self.min_similarity = min_similarity
        self._embedders: dict[str, Embedder] = {}

    def embedder(self, model: str) -> Embedder:
        if model not in self._embedders:
            self._embedders[model] = load_embedder(model)
        return self._embedders[model]

    def dense(self, collections: list[Collection], question: str) -> list[tuple[int, float]]:
        """(chunk id, cosine) of the passages most similar to the question, over each embedded collection."""
        found: list[tuple[int, float]] = []
        for model in sorted({c.embed_model for c in collections if c.embed_model}):
            ids, matrix = from_rows(self.library.vectors([c for c in collections if c.embed_model == model], model))
            if not ids:
                continue
            query = self.embedder(model).embed([question])[0]
            if query.shape[0] != matrix.shape[1]:
                continue  # vectors of another size: the collection needs re-indexing with this model
            sims = matrix @ query
            order = np.argsort(-sims)[:CANDIDATES]
            found += [(ids[i], float(sims[i])) for i in order if sims[i] >= self.min_similarity]
        return sorted(found, key=lambda pair: -pair[1])

    def retrieve(self, names: list[str], question: str, k: int = TOP_K) -> Retrieval:
        collections = [self.library.get(name) for name in names]
        lexical = [hit.chunk_id for hit in bm25_pool(self.library, collections, question)]
        embedded = any(c.embed_model for c in collections)
        if embedded:
            dense = [chunk_id for chunk_id, _ in self.dense(collections, question)]
            ranked = rrf([lexical, dense])
        else:
            ranked = lexical
        chosen = ranked[:k]
        passages = self.library.passages(chosen)
        return Retrieval([passages[i] for i in chosen if i in passages], "hybrid" if embedded else "bm25",
                         [c.name for c in collections])
