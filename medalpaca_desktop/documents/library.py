"""Collections of the user's documents in the app database: what they hold and where each passage is.

Light (standard library and core only): the GUI lists collections, files and passages through it;
the indexing worker writes through it. Every write is one short transaction of core.store, so a
crash mid-index leaves each file either wholly indexed or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medalpaca_desktop.core.store import Store
from medalpaca_desktop.documents.chunks import Chunk
from medalpaca_desktop.documents.passage import Passage


class LibraryError(ValueError):
    """A collection that does not exist or cannot be made; the message is one sentence."""


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    embed_model: str | None
    sources: tuple[str, ...]
    files: int
    failed: int
    chunks: int
    pages: int
    scanned_at: float | None


@dataclass(frozen=True)
class FileRecord:
    id: int
    path: str
    size: int
    mtime: float
    sha256: str | None
    status: str
    error: str | None
    pages: int
    chunks: int


def collection_token(collection_id: int) -> str:
    """The word that marks a collection's rows in the full-text index (its `coll` column)."""
    return f"k{collection_id}"


def valid_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise LibraryError("A collection needs a name.")
    if len(name) > 80:
        raise LibraryError("A collection name is at most 80 characters.")
    return name


class Library:
    """The collections in one Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- collections ----------------------------------------------------------------
    def collections(self) -> list[Collection]:
        rows = self.store.read(
            "SELECT c.id, c.name, c.embed_model, c.scanned_at, "
            "(SELECT count(*) FROM doc_files f WHERE f.collection_id = c.id AND f.status = 'indexed') AS files, "
            "(SELECT count(*) FROM doc_files f WHERE f.collection_id = c.id AND f.status = 'failed') AS failed, "
            "(SELECT coalesce(sum(f.chunks), 0) FROM doc_files f WHERE f.collection_id = c.id) AS chunks, "
            "(SELECT coalesce(sum(f.pages), 0) FROM doc_files f WHERE f.collection_id = c.id) AS pages "
            "FROM doc_collections c ORDER BY c.name COLLATE NOCASE")
        sources: dict[int, list[str]] = {}
        for row in self.store.read("SELECT collection_id, path FROM doc_sources ORDER BY path"):
            sources.setdefault(row["collection_id"], []).append(row["path"])
        return [Collection(r["id"], r["name"], r["embed_model"], tuple(sources.get(r["id"], ())), r["files"],
                           r["failed"], r["chunks"], r["pages"], r["scanned_at"]) for r in rows]

    def get(self, name: str) -> Collection:
        for collection in self.collections():
            if collection.name.casefold() == name.strip().casefold():
                return collection
        known = ", ".join(c.name for c in self.collections()) or "none yet"
        raise LibraryError(f"There is no collection named {name!r} (collections: {known}).")

    def ensure(self, name: str, sources: Iterable[str] = (), embed_model: str | None = None) -> Collection:
        """The collection `name`, created if new, with `sources` added and its embedding model set if given."""
        name = valid_name(name)
        with self.store.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO doc_collections (name, created_at) VALUES (?, ?)",
                         (name, time.time()))
            cid = int(conn.execute("SELECT id FROM doc_collections WHERE name = ?", (name,)).fetchone()[0])
            for source in sources:
                conn.execute("INSERT OR IGNORE INTO doc_sources (collection_id, path) VALUES (?, ?)",
                             (cid, str(source)))
            if embed_model is not None:
                conn.execute("UPDATE doc_collections SET embed_model = ? WHERE id = ?", (embed_model or None, cid))
        return self.get(name)

    def remove(self, name: str) -> None:
        """The collection, its files, passages, index rows and vectors; the files on disk are not touched."""
        collection = self.get(name)
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM doc_fts WHERE rowid IN (SELECT c.id FROM doc_chunks c JOIN doc_files f "
                         "ON f.id = c.file_id WHERE f.collection_id = ?)", (collection.id,))
            conn.execute("DELETE FROM doc_collections WHERE id = ?", (collection.id,))

    def remove_source(self, name: str, source: str) -> None:
        collection = self.get(name)
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM doc_sources WHERE collection_id = ? AND path = ?", (collection.id, source))

    def mark_scanned(self, collection: Collection) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE doc_collections SET scanned_at = ? WHERE id = ?", (time.time(), collection.id))

    # -- files ----------------------------------------------------------------------
    def files(self, collection: Collection) -> list[FileRecord]:
        rows = self.store.read("SELECT * FROM doc_files WHERE collection_id = ? ORDER BY path", (collection.id,))
        return [FileRecord(r["id"], r["path"], r["size"], r["mtime"], r["sha256"], r["status"], r["error"],
                           r["pages"], r["chunks"]) for r in rows]

    def _drop_file(self, conn, file_id: int) -> None:
        conn.execute("DELETE FROM doc_fts WHERE rowid IN (SELECT id FROM doc_chunks WHERE file_id = ?)", (file_id,))
        conn.execute("DELETE FROM doc_files WHERE id = ?", (file_id,))

    def forget_file(self, collection: Collection, path: str) -> None:
        with self.store.transaction() as conn:
            row = conn.execute("SELECT id FROM doc_files WHERE collection_id = ? AND path = ?",
                               (collection.id, path)).fetchone()
            if row is not None:
                self._drop_file(conn, int(row[0]))

    def touch_file(self, collection: Collection, path: str, size: int, mtime: float) -> None:
        """A file saved again with the same bytes: record its new time so the next scan need not hash it."""
        with self.store.transaction() as conn:
            conn.execute("UPDATE doc_files SET size = ?, mtime = ? WHERE collection_id = ? AND path = ?",
                         (size, mtime, collection.id, path))

    def write_file(self, collection: Collection, path: str, *, size: int, mtime: float, sha256: str | None,
                   pages: int, chunks: list[Chunk], error: str | None = None,
                   vectors: list[bytes] | None = None, embed_model: str | None = None) -> int:
        """Replace the file's record and passages in one transaction (failed: `error`, no passages)."""
        title = Path(path).stem.replace("_", " ").replace("-", " ")
        with self.store.transaction() as conn:
            row = conn.execute("SELECT id FROM doc_files WHERE collection_id = ? AND path = ?",
                               (collection.id, path)).fetchone()
            if row is not None:
                self._drop_file(conn, int(row[0]))
            cur = conn.execute(
                "INSERT INTO doc_files (collection_id, path, size, mtime, sha256, status, error, pages, chunks, "
                "indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (collection.id, path, size, mtime, sha256, "failed" if error else "indexed", error,
                 pages, len(chunks), time.time()))
            file_id = int(cur.lastrowid or 0)
            for i, chunk in enumerate(chunks):
                cur = conn.execute("INSERT INTO doc_chunks (file_id, page, section, start, end, text) "
                                   "VALUES (?, ?, ?, ?, ?, ?)",
                                   (file_id, chunk.page, chunk.section, chunk.start, chunk.end, chunk.text))
                chunk_id = int(cur.lastrowid or 0)
                conn.execute("INSERT INTO doc_fts (rowid, text, title, coll) VALUES (?, ?, ?, ?)",
                             (chunk_id, chunk.text, title, collection_token(collection.id)))
                if vectors is not None and embed_model:
                    conn.execute("INSERT INTO doc_vectors (chunk_id, model, vector) VALUES (?, ?, ?)",
                                 (chunk_id, embed_model, vectors[i]))
            return file_id

    # -- passages -------------------------------------------------------------------
    _PASSAGE_SQL = ("SELECT c.id, f.path, c.page, c.section, c.start, c.end, c.text, k.name FROM doc_chunks c "
                    "JOIN doc_files f ON f.id = c.file_id JOIN doc_collections k ON k.id = f.collection_id ")

    def passages(self, chunk_ids: Iterable[int]) -> dict[int, Passage]:
        ids = list(dict.fromkeys(int(i) for i in chunk_ids))
        if not ids:
            return {}
        rows = self.store.read(self._PASSAGE_SQL + f"WHERE c.id IN ({','.join('?' * len(ids))})", tuple(ids))
        return {r[0]: Passage(*r) for r in rows}

    def vectors(self, collections: list[Collection], model: str) -> list[tuple[int, bytes]]:
        ids = [c.id for c in collections]
        if not ids:
            return []
        return [(r[0], r[1]) for r in self.store.read(
            "SELECT v.chunk_id, v.vector FROM doc_vectors v JOIN doc_chunks c ON c.id = v.chunk_id "
            f"JOIN doc_files f ON f.id = c.file_id WHERE v.model = ? AND f.collection_id IN "
            f"({','.join('?' * len(ids))})", (model, *ids))]
