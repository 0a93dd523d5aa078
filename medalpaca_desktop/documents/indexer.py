"""Index a collection's folders and files: new and changed files read, removed ones forgotten.

The one indexing job behind `medalpaca docs add`, the Documents panel's Add and Rescan, and the
rescan when a collection is attached. A file is skipped when its size and modification time are
as recorded (or, after a touch, its sha256); a file that cannot be read is recorded with the reason
and the rest go on. Each file is written in its own transaction, so a stop or a crash keeps every
file finished before it. Progress with ETA is over the files to read, weighted by size.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from medalpaca_desktop.core.events import Event, Warning
from medalpaca_desktop.core.payloads import Indexed, IndexedFile
from medalpaca_desktop.core.progress import ProgressReporter
from medalpaca_desktop.documents.chunks import chunk_pages
from medalpaca_desktop.documents.extract import ExtractError, extract_pages, file_kind
from medalpaca_desktop.documents.library import Collection, FileRecord, Library, LibraryError


@dataclass
class Candidate:
    path: Path
    size: int
    mtime: float


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def walk_sources(sources: tuple[str, ...] | list[str]) -> tuple[list[Candidate], list[str]]:
    """The readable-format files under each source (folders recursively, hidden ones skipped), and missing sources."""
    found: dict[str, Candidate] = {}
    missing: list[str] = []

    def add(path: Path) -> None:
        try:
            st = path.stat()
        except OSError:
            return
        found.setdefault(str(path), Candidate(path, st.st_size, st.st_mtime))

    for source in sources:
        root = Path(source)
        if root.is_file():
            add(root.resolve())
        elif root.is_dir():
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    path = Path(folder) / name
                    if not name.startswith((".", "~$")) and file_kind(path) is not None:
                        add(path.resolve())
        else:
            missing.append(source)
    return sorted(found.values(), key=lambda c: str(c.path)), missing


def _changed(library: Library, collection: Collection, candidate: Candidate, record: FileRecord | None) -> bool:
    if record is None:
        return True
    if record.size == candidate.size and abs(record.mtime - candidate.mtime) < 1e-6:
        return False
    try:
        same = record.status == "indexed" and record.sha256 == _sha256(candidate.path)
    except OSError:
        return True
    if same:
        library.touch_file(collection, record.path, candidate.size, candidate.mtime)
    return not same


def index_collection(library: Library, name: str, add: list[str] | None = None, *, embed_model: str | None = None,
                     emit: Callable[[Event], None] = lambda event: None, progress: ProgressReporter | None = None,
                     stop: threading.Event | None = None) -> Indexed:
    """Bring collection `name` up to date with its sources (plus `add`); the totals as an Indexed payload."""
    started = time.monotonic()
    sources = [str(Path(p).expanduser().resolve()) for p in add or []]
    for source in sources:
        if not Path(source).exists():
            raise LibraryError(f"{source} does not exist.")
    try:
        before = library.get(name).embed_model
    except LibraryError:
        before = None
    collection = library.ensure(name, sources, embed_model=embed_model)
    new_model = collection.embed_model != before  # every passage needs a vector from the new model
    candidates, missing = walk_sources(collection.sources)
    for source in missing:
        emit(Warning(message=f"{source} is no longer there; its files are left out until it is back."))
    records = {r.path: r for r in library.files(collection)}
    totals = Indexed(collection=collection.name)
    present = {str(c.path) for c in candidates}
    missing_roots = [Path(m).resolve() for m in missing]  # unplugged drives: their files are kept, not forgotten
    for path in records:
        if path not in present and not any(Path(path).is_relative_to(root) for root in missing_roots):
            library.forget_file(collection, path)
            totals.removed += 1
            emit(IndexedFile(collection=collection.name, path=path, status="removed").to_result())
    todo = [c for c in candidates if new_model or _changed(library, collection, c, records.get(str(c.path)))]
    totals.unchanged = len(candidates) - len(todo)
    embedder = None
    if collection.embed_model and todo:
        from medalpaca_desktop.documents.embed import load_embedder  # worker side only

        embedder = load_embedder(collection.embed_model)
    if progress is not None:
        progress.total = float(sum(max(c.size, 1) for c in todo)) or None
        progress.unit = "bytes"
    done_bytes = 0.0
    for candidate in todo:
        if stop is not None and stop.is_set():
            break
        _index_file(library, collection, candidate, embedder, totals, emit)
        done_bytes += max(candidate.size, 1)
        if progress is not None:
            progress.update(done_bytes, f"{candidate.path.name} ({totals.pages} pages so far)")
    library.mark_scanned(collection)
    totals.seconds = round(time.monotonic() - started, 3)
    return totals


def _index_file(library: Library, collection: Collection, candidate: Candidate, embedder, totals: Indexed,
                emit: Callable[[Event], None]) -> None:
    path = str(candidate.path)
    try:
        sha = _sha256(candidate.path)
        pages = extract_pages(candidate.path)
    except (ExtractError, OSError) as exc:
        reason = str(exc) if isinstance(exc, ExtractError) else f"cannot be read ({exc.strerror or exc})"
        library.write_file(collection, path, size=candidate.size, mtime=candidate.mtime, sha256=None, pages=0,
                           chunks=[], error=reason)
        totals.failed += 1
        emit(IndexedFile(collection=collection.name, path=path, status="failed", error=reason).to_result())
        return
    chunks = chunk_pages(pages)
    vectors = None
    if embedder is not None and chunks:
        from medalpaca_desktop.documents.embed import to_bytes

        vectors = [to_bytes(v) for v in embedder.embed([c.text for c in chunks])]
    library.write_file(collection, path, size=candidate.size, mtime=candidate.mtime, sha256=sha, pages=len(pages),
                       chunks=chunks, vectors=vectors, embed_model=collection.embed_model)
    totals.indexed += 1
    totals.pages += len(pages)
    totals.chunks += len(chunks)
    emit(IndexedFile(collection=collection.name, path=path, status="indexed", pages=len(pages),
                     chunks=len(chunks)).to_result())


def iter_failed(library: Library, collection: Collection) -> Iterator[FileRecord]:
    return (r for r in library.files(collection) if r.status == "failed")
