"""Embedding models for dense retrieval: a GGUF file through llama-cpp-python, or a sentence-transformers folder.

Worker side only (the indexing job and the chat host import it; the GUI never does). Vectors are
unit-length float32, so a dot product is the cosine similarity; they are stored as bytes in the
collection's rows (documents.library) and searched with NumPy, which is fast enough for the tens of
thousands of passages a workstation's collection holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class EmbedError(ValueError):
    """An embedding model that cannot be used; one sentence saying why and what to do."""


class Embedder(Protocol):
    model: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class GGUFEmbedder:
    """A GGUF model in llama.cpp's embedding mode, mean-pooled where the file names no pooling."""

    def __init__(self, path: Path, n_ctx: int = 512) -> None:
        from llama_cpp import LLAMA_POOLING_TYPE_MEAN, LLAMA_POOLING_TYPE_UNSPECIFIED, Llama

        from medalpaca_desktop.core.gguf_meta import GGUFFormatError, read_gguf_header

        try:
            header = read_gguf_header(path)
        except (GGUFFormatError, OSError) as exc:
            raise EmbedError(f"The embedding model {path.name} cannot be read ({exc}).") from exc
        arch = str(header.get("general.architecture", ""))
        pooled = header.get(f"{arch}.pooling_type") is not None
        self.model = str(path)
        self._llm: Any = Llama(model_path=str(path), embedding=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                               n_threads=os.cpu_count(), verbose=False,
                               pooling_type=LLAMA_POOLING_TYPE_UNSPECIFIED if pooled else LLAMA_POOLING_TYPE_MEAN)

    def embed(self, texts: list[str]) -> np.ndarray:
        out = [self._llm.embed(text, truncate=True) for text in texts]  # one sequence each: no cross-talk
        return _unit(np.array([v[0] if v and isinstance(v[0], list) else v for v in out]))


class SentenceTransformerEmbedder:
    """A sentence-transformers model folder (modules.json), on the GPU where there is one."""

    def __init__(self, path: Path) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedError("This embedding model is a sentence-transformers folder; install sentence-transformers "
                             "(pip install sentence-transformers) or use a GGUF embedding model.") from exc
        self.model = str(path)
        try:
            self._st = SentenceTransformer(str(path), local_files_only=True, trust_remote_code=False)
        except Exception as exc:
            raise EmbedError(f"The embedding model {path.name} cannot be loaded ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]}).") from exc

    def embed(self, texts: list[str]) -> np.ndarray:
        return _unit(self._st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False))


def load_embedder(model: str) -> Embedder:
    """The embedder for `model` (a .gguf file or a sentence-transformers folder); EmbedError otherwise."""
    path = Path(model).expanduser()
    if not path.exists():
        raise EmbedError(f"The embedding model {model} does not exist; choose another or index without one.")
    if path.is_file() and path.suffix.lower() == ".gguf":
        return GGUFEmbedder(path)
    if path.is_dir() and ((path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file()):
        return SentenceTransformerEmbedder(path)
    raise EmbedError(f"{path.name} is not an embedding model the app can use: choose a .gguf file or a "
                     "sentence-transformers folder (with modules.json).")


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_rows(rows: list[tuple[int, bytes]]) -> tuple[list[int], np.ndarray]:
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    ids = [r[0] for r in rows]
    return ids, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
