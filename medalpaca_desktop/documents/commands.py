"""`medalpaca docs ...` and `python -m medalpaca_desktop.documents ...`: one parser, the GUI's jobs.

add COLLECTION PATH... [--embed MODEL]   index files and folders (new and changed files only)
rescan COLLECTION | --all                pick up files added, changed or removed since
search COLLECTION "query" [-k 5]         the passages a chat would be sent
list / files COLLECTION / remove COLLECTION
With --jsonl the job speaks JSON-line events on stdout (the Documents panel runs it so); otherwise
a progress line on stderr and a table on stdout. Bad input is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from medalpaca_desktop.core.events import Done, Error, Event, Result
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.model_info import format_size

PROG = "medalpaca docs"


def _fail(message: str) -> ExitCode:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return ExitCode.BAD_INPUT


def _library():
    from medalpaca_desktop.core.store import Store
    from medalpaca_desktop.documents.library import Library

    return Library(Store())


def _cmd_index(args: argparse.Namespace) -> int:
    from medalpaca_desktop.core.events import EventWriter
    from medalpaca_desktop.core.payloads import IndexedFile, parse_payload
    from medalpaca_desktop.core.progress import ProgressReporter
    from medalpaca_desktop.core.store import StoreError
    from medalpaca_desktop.core.worker import TerminalWriter, Worker, run_worker
    from medalpaca_desktop.documents.embed import EmbedError
    from medalpaca_desktop.documents.indexer import index_collection
    from medalpaca_desktop.documents.library import LibraryError

    writer: EventWriter | None = None if args.jsonl else TerminalWriter(PROG)

    def job(worker: Worker) -> int:
        def emit(event: Event) -> None:
            worker.emit(event)
            if not args.jsonl and isinstance(event, Result):
                payload = parse_payload(event.data)
                if isinstance(payload, IndexedFile) and payload.status == "failed":
                    print(f"\n{PROG}: not indexed: {payload.path}: {payload.error}", file=sys.stderr)

        try:
            library = _library()
            names = ([c.name for c in library.collections()] if getattr(args, "all", False)
                     else [args.collection])
            for name in names:
                progress = ProgressReporter.for_terminal(f"Indexing {name}", None, events=worker.writer)
                totals = index_collection(library, name, getattr(args, "paths", None),
                                          embed_model=getattr(args, "embed", None), emit=emit, progress=progress,
                                          stop=worker.stop)
                progress.finish(f"{totals.indexed} indexed, {totals.unchanged} unchanged, {totals.failed} failed")
                worker.emit(totals.to_result())
                if not args.jsonl:
                    rate = totals.pages / totals.seconds if totals.seconds and totals.pages else 0.0
                    print(f"{totals.collection}: {totals.indexed} files indexed ({totals.pages} pages, "
                          f"{totals.chunks} passages{f', {rate:.1f} pages/s' if rate else ''}), {totals.unchanged} "
                          f"unchanged, {totals.failed} not readable, {totals.removed} removed")
                if worker.stop.is_set():
                    worker.emit(Done(ok=False, stopped=True))
                    return ExitCode.STOPPED
        except (LibraryError, EmbedError, StoreError) as exc:
            worker.emit(Error(message=str(exc), kind="bad_input"))
            worker.emit(Done(ok=False))
            return ExitCode.BAD_INPUT
        worker.emit(Done(ok=True))
        return ExitCode.OK

    return run_worker(job, name="document indexing", writer=writer)


def _cmd_search(args: argparse.Namespace) -> int:
    from medalpaca_desktop.core.offline import stay_offline
    from medalpaca_desktop.core.store import StoreError
    from medalpaca_desktop.documents.embed import EmbedError
    from medalpaca_desktop.documents.library import LibraryError
    from medalpaca_desktop.documents.retrieve import Retriever

    stay_offline()
    try:
        retrieval = Retriever(_library()).retrieve(args.collection, args.query, k=args.k)
    except (LibraryError, EmbedError, StoreError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps({"mode": retrieval.mode, "collections": retrieval.collections,
                          "passages": [{"chunk_id": p.chunk_id, "path": p.path, "page": p.page, "section": p.section,
                                        "start": p.start, "end": p.end, "text": p.text, "collection": p.collection}
                                       for p in retrieval.passages]}, indent=2, ensure_ascii=False))
        return ExitCode.OK
    if retrieval.nothing_found:
        print(f"Nothing in {', '.join(retrieval.collections)} matches this question.")
        return ExitCode.OK
    for n, p in enumerate(retrieval.passages, start=1):
        text = " ".join(p.text.split())
        print(f"[{n}] {p.where}  ({p.path})\n    {text[:300]}{'...' if len(text) > 300 else ''}")
    return ExitCode.OK


def _cmd_list(args: argparse.Namespace) -> int:
    from medalpaca_desktop.core.store import StoreError

    try:
        collections = _library().collections()
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([c.__dict__ | {"sources": list(c.sources)} for c in collections], indent=2))
    elif not collections:
        print("No collections yet: `medalpaca docs add NAME FOLDER` makes one.")
    for c in collections if not args.json else []:
        failed = f", {c.failed} not readable" if c.failed else ""
        embed = f", embeddings: {c.embed_model}" if c.embed_model else ""
        print(f"{c.name}: {c.files} files, {c.pages} pages, {c.chunks} passages{failed}{embed}")
        for source in c.sources:
            print(f"    {source}")
    return ExitCode.OK


def _cmd_files(args: argparse.Namespace) -> int:
    from medalpaca_desktop.core.store import StoreError
    from medalpaca_desktop.documents.library import LibraryError

    try:
        library = _library()
        records = library.files(library.get(args.collection))
    except (LibraryError, StoreError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([r.__dict__ for r in records], indent=2))
        return ExitCode.OK
    for r in records:
        state = f"not readable: {r.error}" if r.status == "failed" else f"{r.pages} pages, {r.chunks} passages"
        print(f"{r.path}  ({format_size(r.size)}) {state}")
    return ExitCode.OK


def _cmd_remove(args: argparse.Namespace) -> int:
    from medalpaca_desktop.core.store import StoreError
    from medalpaca_desktop.documents.library import LibraryError

    try:
        _library().remove(args.collection)
    except (LibraryError, StoreError) as exc:
        return _fail(str(exc))
    print(f"Removed the collection {args.collection} and its index (your files are untouched).")
    return ExitCode.OK


def add_docs_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="docs_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="index files and folders into a collection (made if new)")
    add.add_argument("collection", help="the collection's name")
    add.add_argument("paths", nargs="+", help="files (PDF, DOCX, Markdown, text, HTML) and folders")
    add.add_argument("--embed", metavar="MODEL", help="an embedding model (a .gguf file or a sentence-transformers "
                     "folder) for dense retrieval beside BM25; '' turns it off")
    add.add_argument("--jsonl", action="store_true", help="JSON-line events on stdout")
    add.set_defaults(func=_cmd_index)
    rescan = sub.add_parser("rescan", help="pick up files added, changed or removed since the last scan")
    rescan.add_argument("collection", nargs="?", help="the collection (or --all)")
    rescan.add_argument("--all", action="store_true", help="every collection")
    rescan.add_argument("--jsonl", action="store_true", help="JSON-line events on stdout")
    rescan.set_defaults(func=_cmd_index)
    search = sub.add_parser("search", help="the passages a chat with this collection would be sent")
    search.add_argument("collection", action="append", help="the collection")
    search.add_argument("query", help="the question")
    search.add_argument("-k", type=int, default=4, help="how many passages (default 4, as a chat sends)")
    search.add_argument("--json", action="store_true", help="as JSON")
    search.set_defaults(func=_cmd_search)
    lst = sub.add_parser("list", help="the collections")
    lst.add_argument("--json", action="store_true", help="as JSON")
    lst.set_defaults(func=_cmd_list)
    files = sub.add_parser("files", help="a collection's files, with the reason for each one not readable")
    files.add_argument("collection")
    files.add_argument("--json", action="store_true", help="as JSON")
    files.set_defaults(func=_cmd_files)
    remove = sub.add_parser("remove", help="remove a collection and its index (the files are not touched)")
    remove.add_argument("collection")
    remove.set_defaults(func=_cmd_remove)


def run(args: argparse.Namespace) -> int:
    if args.func is _cmd_index and args.docs_command == "rescan" and not args.all and not args.collection:
        return _fail("name a collection to rescan, or --all")
    if getattr(args, "k", 1) < 1:
        return _fail("-k must be at least 1")
    return int(args.func(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_docs_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BrokenPipeError:
        return ExitCode.OK

