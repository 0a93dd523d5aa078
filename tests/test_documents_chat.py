"""Grounded chat end to end: the host retrieves, numbers the passages, the model answers, citations are checked.

Real processes and real models: the chat host with the demo model (SmolLM2-135M GGUF), the CLI as a
person runs it, and dense retrieval with a GGUF embedding model and a sentence-transformers folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.retrieval_set import build
from test_host_llamacpp import Host, greedy

from medalpaca_desktop.core.chat_protocol import ChatMessage
from medalpaca_desktop.core.events import Done, Error, Result, Started
from medalpaca_desktop.core.payloads import Sources, parse_payload
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.documents.grounding import INSTRUCTION, NOTHING_FOUND, Source
from medalpaca_desktop.documents.indexer import index_collection
from medalpaca_desktop.documents.library import Library
from medalpaca_desktop.documents.retrieve import Retriever

QUESTION = "What INR range should I aim for with a mechanical mitral valve?"
OFF_TOPIC = "What sunscreen SPF is advised after basal cell carcinoma excision?"  # none of the documents covers it


@pytest.fixture()
def clinic(tmp_path) -> Path:
    """The retrieval test set indexed as collection 'clinic' in the app's own database (this test's home)."""
    folder = tmp_path / "docs"
    build(folder)
    index_collection(Library(Store()), "clinic", [str(folder)])
    return folder


def _sources(events) -> Sources:
    return next(p for e in events if isinstance(e, Result) and isinstance(p := parse_payload(e.data), Sources))


def test_the_host_sends_numbered_passages_and_the_demo_model_answers_from_them(clinic, demo_gguf):
    host = Host()
    try:
        assert isinstance(host.next(), Started)
        assert isinstance(host.load(demo_gguf, n_ctx=4096), Result)
        prompt, text, done, events = host.generate(messages=[ChatMessage("user", QUESTION)], documents=["clinic"],
                                                   sampling=greedy(max_tokens=60))
        assert isinstance(done, Done) and done.ok
        sources = _sources(events)
        kinds = [e.data.get("kind") for e in events if isinstance(e, Result)]
        assert kinds.index("sources") < kinds.index("prompt")  # the inspector shows what was retrieved, then sent
        assert not sources.nothing_found and sources.mode == "bm25" and sources.collections == ["clinic"]
        sent = [Source.from_dict(s) for s in sources.sources]
        assert [s.n for s in sent] == list(range(1, len(sent) + 1)) and len(sent) <= 4
        assert (Path(sent[0].path).name, sent[0].page) == ("anticoagulation_clinic.pdf", 2)
        assert INSTRUCTION in prompt["text"] and f"[1] ({sent[0].where})" in prompt["text"]
        assert prompt["text"].count("Question: " + QUESTION) == 1
        assert text.strip()

        _p, _t, done, events = host.generate(messages=[ChatMessage("user", OFF_TOPIC)],
                                             documents=["clinic"], sampling=greedy(max_tokens=8))
        assert _sources(events).nothing_found and _sources(events).sources == []
        assert NOTHING_FOUND.format(names="clinic") in _p["text"]

        rid_events = host.generate(messages=[ChatMessage("user", "x")], documents=["nope"],
                                   sampling=greedy(max_tokens=4))[3]
        error = next(e for e in rid_events if isinstance(e, Error))
        assert error.kind == "not_found" and "no collection named 'nope'" in error.message
        assert host.generate(messages=[ChatMessage("user", "Hi")], sampling=greedy(max_tokens=4))[2].ok  # still usable
    finally:
        host.close()


def test_medalpaca_chat_docs_prints_the_sources_under_the_answer(clinic, demo_gguf):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop.cli", "chat", "--model", str(demo_gguf),
                           "--docs", "clinic", "--prompt", QUESTION, "--temperature", "0", "--max-tokens", "40"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Sources:\n  [1] anticoagulation_clinic.pdf, page 2" in proc.stdout
    search = subprocess.run([sys.executable, "-m", "medalpaca_desktop.cli", "docs", "search", "clinic", QUESTION,
                             "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert search.returncode == 0, search.stderr
    first = json.loads(search.stdout)["passages"][0]
    assert (Path(first["path"]).name, first["page"]) == ("anticoagulation_clinic.pdf", 2)
    missing = subprocess.run([sys.executable, "-m", "medalpaca_desktop.cli", "docs", "search", "nope", "x"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "no collection named 'nope'" in missing.stderr


def test_docs_add_speaks_events_for_the_gui_and_lists_unreadable_files(tmp_path):
    folder = tmp_path / "docs"
    build(folder)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop.documents", "add", "clinic", str(folder),
                           "--jsonl"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["data"]["kind"] for e in events if e["type"] == "result"]
    assert kinds.count("indexed_file") == 5 and kinds[-1] == "indexed"
    assert any(e["type"] == "progress" and e.get("eta_s") is not None for e in events)
    failed = [e["data"] for e in events if e["type"] == "result" and e["data"].get("status") == "failed"]
    assert [Path(f["path"]).name for f in failed] == ["broken.pdf"]
    assert events[-1]["type"] == "done" and events[-1]["ok"]
    listing = subprocess.run([sys.executable, "-m", "medalpaca_desktop.cli", "docs", "files", "clinic"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert "broken.pdf" in listing.stdout and "not readable: is not a readable PDF" in listing.stdout
    bad = subprocess.run([sys.executable, "-m", "medalpaca_desktop.cli", "docs", "add", "x", str(tmp_path / "none")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def _st_folder(tiny_llama_dir: Path, out: Path) -> Path:
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.models import Pooling, Transformer

    word = Transformer(str(tiny_llama_dir))
    if word.tokenizer.pad_token is None:
        word.tokenizer.pad_token = word.tokenizer.eos_token
    dim = (word.get_embedding_dimension() if hasattr(word, "get_embedding_dimension")
           else word.get_word_embedding_dimension())
    model = SentenceTransformer(modules=[word, Pooling(dim, "mean")])
    model.save(str(out))
    return out


@pytest.mark.parametrize("kind", ["gguf", "sentence-transformers"])
def test_an_embedding_model_adds_dense_retrieval_fused_with_bm25(tmp_path, kind, tiny_gguf, tiny_llama_dir):
    folder = tmp_path / "docs"
    build(folder)
    model = str(tiny_gguf) if kind == "gguf" else str(_st_folder(tiny_llama_dir, tmp_path / "st"))
    library = Library(Store(tmp_path / "app.sqlite"))
    index_collection(library, "dense", [str(folder)], embed_model=model)
    collection = library.get("dense")
    vectors = library.vectors([collection], model)
    assert len(vectors) == collection.chunks and len({len(v) for _, v in vectors}) == 1
    retriever = Retriever(library, min_similarity=-1.0)  # random weights: every passage is "similar"
    retrieval = retriever.retrieve(["dense"], QUESTION, k=5)
    assert retrieval.mode == "hybrid" and len(retrieval.passages) == 5
    assert any((Path(p.path).name, p.page) == ("anticoagulation_clinic.pdf", 2) for p in retrieval.passages)
    strict = Retriever(library, min_similarity=1.01)  # no dense hit counts: BM25 alone decides
    assert strict.retrieve(["dense"], OFF_TOPIC).nothing_found


def test_a_missing_embedding_model_is_one_sentence(tmp_path):
    from medalpaca_desktop.documents.embed import EmbedError, load_embedder

    with pytest.raises(EmbedError, match="does not exist"):
        load_embedder(str(tmp_path / "none.gguf"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(EmbedError, match="not an embedding model"):
        load_embedder(str(tmp_path / "folder"))


def test_indexing_killed_midway_keeps_what_it_finished_and_the_next_scan_does_the_rest(tmp_path):
    import signal
    import sqlite3

    folder = tmp_path / "docs"
    build(folder, repeat=6)  # 24 files
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "medalpaca_desktop.documents", "add", "big", str(folder), "--jsonl"],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if '"indexed_file"' in line:
            seen += 1
            if seen == 3:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    library = Library(Store())
    kept = library.get("big").files
    assert 3 <= kept < 24
    conn = sqlite3.connect(library.store.path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.execute("INSERT INTO doc_fts(doc_fts) VALUES ('integrity-check')")  # raises when the index is damaged
    conn.rollback()
    conn.close()
    totals = index_collection(library, "big", [])
    assert totals.unchanged == kept and totals.indexed == 24 - kept
