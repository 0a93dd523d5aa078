"""The Chat tab's Documents panel and cited answers, offscreen, against the real indexing job and chat host."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.retrieval_set import build
from helpers.ui_support import isolate_user_home
from PySide6.QtCore import Qt

from medalpaca_desktop.core.models import inspect_model
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.documents.indexer import index_collection
from medalpaca_desktop.documents.library import Library
from medalpaca_desktop.ui.chat.citations import link_citations, sources_of
from medalpaca_desktop.ui.chat.conversation import Entry
from medalpaca_desktop.ui.chat.tab import ChatTab

QUESTION = "What INR range should I aim for with a mechanical mitral valve?"


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)


@pytest.fixture
def tab(qtbot):
    made = ChatTab()
    qtbot.addWidget(made)
    made.resize(1200, 760)
    made.show()
    yield made
    made.shutdown()


def _item(tab: ChatTab, name: str):
    panel = tab.documents
    return next(panel.list.item(i) for i in range(panel.list.count())
                if panel.list.item(i).data(Qt.ItemDataRole.UserRole) == name)


def test_adding_a_folder_indexes_it_with_progress_and_lists_unreadable_files(qtbot, tab, tmp_path):
    folder = tmp_path / "docs"
    build(folder)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    panel = tab.documents
    assert panel.list.count() == 0 and "Add a folder" in panel.intro_label.text()
    progress = []
    panel.job.sig_event_received.connect(lambda e: progress.append(e) if type(e).__name__ == "Progress" else None)
    with qtbot.waitSignal(panel.job.sig_finished, timeout=120_000):
        panel.add_paths("Clinic", [str(folder)])
        assert panel.progress.isVisibleTo(panel) and panel.stop_button.isVisibleTo(panel)
    assert progress and progress[-1].eta_s is not None
    assert panel.list.count() == 1 and panel.intro_label.text().startswith("Ticked collections")
    assert _item(tab, "Clinic").text() == "Clinic — 4 files, 19 pages, 1 not readable"
    assert "Clinic: 4 files indexed (19 pages), 1 not readable (listed below)." == panel.status_label.text()
    assert panel.failed_list.count() == 1 and panel.failed_list.item(0).text().startswith("broken.pdf: is not a "
                                                                                          "readable PDF")
    _item(tab, "Clinic").setCheckState(Qt.CheckState.Checked)
    assert panel.attached() == ["Clinic"] and "Answers from Clinic" in tab.status_text()
    assert tab._answer_settings(None).documents == ["Clinic"]
    qtbot.waitUntil(lambda: not panel.job.is_running(), timeout=60_000)  # the rescan that ticking starts
    assert panel.status_label.text() == "Clinic is up to date."

    panel.remove("Clinic")
    assert panel.list.count() == 0 and panel.attached() == [] and folder.joinpath("broken.pdf").is_file()


def test_a_cited_answer_links_sent_sources_flags_others_and_opens_the_passage(qtbot, tab, tmp_path):
    folder = tmp_path / "docs"
    build(folder)
    library = Library(Store())
    index_collection(library, "Clinic", [str(folder)])
    from medalpaca_desktop.documents.grounding import check_citations, sources_from
    from medalpaca_desktop.documents.search import bm25

    hits = bm25(library, [library.get("Clinic")], QUESTION, k=3)
    passages = library.passages([h.chunk_id for h in hits])
    sources = sources_from([passages[h.chunk_id] for h in hits])
    text = "The target is 3.0, range 2.5 to 3.5 [1]. Bridging is rarely needed [9]."
    entry = Entry(None, "assistant", text, meta={
        "status": "done", "sources": [s.to_dict() for s in sources], "documents": ["Clinic"],
        "retrieval": {"collections": ["Clinic"], "mode": "bm25", "nothing_found": False},
        "citations": check_citations(text, sources).to_dict()})
    tab.view.set_entries([Entry(None, "user", QUESTION), entry])
    widget = tab.view.widget_for(entry)
    assert "(source:1)" in link_citations(text, sources_of(entry.meta))
    assert "source:1" in widget.body.text() and "not one of the sources sent" in widget.body.text()
    label = widget.sources_label.text()
    assert "[1] anticoagulation_clinic.pdf, page 2" in label and "cites [9], which was not among the 3" in label

    widget.sig_source_requested.emit(entry, 1)  # what clicking [1] does
    panel = tab.documents
    assert tab.side.currentWidget() is panel and panel.source_box.isVisibleTo(panel)
    assert "anticoagulation_clinic.pdf, page 2" in panel.source_title.text()
    assert sources[0].text.split("\n")[0] in panel.source_view.toPlainText()
    url = panel.source_url(sources[0])
    assert url.isLocalFile() and url.fragment() == "page=2"
    assert not tab.show_source(entry, 7)  # a number that was not sent opens nothing

    nothing = Entry(None, "assistant", "The documents do not cover it.", meta={
        "status": "done", "sources": [], "retrieval": {"collections": ["Clinic"], "nothing_found": True}})
    tab.view.add_entry(nothing)
    assert "Nothing in Clinic matched this question" in tab.view.widget_for(nothing).sources_label.text()


def test_a_question_with_documents_is_answered_by_the_demo_model_with_its_sources_kept(qtbot, tab, tmp_path,
                                                                                      demo_gguf):
    folder = tmp_path / "docs"
    build(folder)
    index_collection(Library(Store()), "Clinic", [str(folder)])
    tab.documents.refresh()
    tab.set_models([inspect_model(demo_gguf)], [])
    tab.sampling.fields["temperature"].setValue(0.0)
    tab.sampling.fields["max_tokens"].setValue(40)
    _item(tab, "Clinic").setCheckState(Qt.CheckState.Checked)
    assert tab.send(QUESTION)
    qtbot.waitUntil(lambda: tab.session.answer is None, timeout=120_000)
    answer = [e for e in tab.current.visible if e.role == "assistant"][-1]
    assert answer.meta["status"] == "done", answer.meta
    assert answer.meta["documents"] == ["Clinic"] and "citations" in answer.meta
    sent = sources_of(answer.meta)
    assert (Path(sent[0].path).name, sent[0].page) == ("anticoagulation_clinic.pdf", 2)
    assert "Question: " + QUESTION in answer.meta["prompt"]["text"]
    saved = tab.session.store.messages(tab.session.store.list_chats()[0].id)[-1]
    assert saved.meta["sources"] == answer.meta["sources"]  # on disk: the citations resolve after a restart
    inspector = tab.inspect(answer)
    assert "Retrieved from Clinic (BM25)" in inspector.retrieved_label.text()
    assert "[1] anticoagulation_clinic.pdf, page 2" in inspector.retrieved_label.text()
    inspector.close()
    # reopening the chat shows the collection still ticked for it
    tab.new_chat()
    assert tab.documents.attached() == []
    tab.open_conversation(tab.session.load_conversations()[0])
    assert tab.documents.attached() == ["Clinic"]


def test_an_exported_chat_keeps_its_sources():
    from medalpaca_desktop.ui.chat.conversation import Conversation
    from medalpaca_desktop.ui.chat.export import to_json_data, to_markdown

    source = {"n": 1, "chunk_id": 3, "path": "/docs/guide.pdf", "page": 2, "section": None, "start": 0, "end": 9,
              "text": "INR 3.0", "collection": "C"}
    conv = Conversation(key="k", title="INR")
    conv.entries = [Entry(None, "user", "INR?"), Entry(None, "assistant", "3.0 [1] [4]", meta={
        "status": "done", "sources": [source], "citations": {"cited": [1], "unknown": [4]}})]
    text = to_markdown(conv)
    assert "Sources:\n- [1] guide.pdf, page 2 (/docs/guide.pdf)\n- *cited but not sent: [4]*" in text
    assert to_json_data(conv)["messages"][1]["sources"] == [source]


def test_files_added_while_the_app_was_closed_are_picked_up_when_the_panel_opens(qtbot, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("Metformin is held before contrast.", encoding="utf-8")
    library = Library(Store())
    index_collection(library, "Notes", [str(folder)])
    (folder / "b.md").write_text("Insulin sliding scales are avoided.", encoding="utf-8")
    made = ChatTab()
    qtbot.addWidget(made)
    made.show()
    try:
        made.show_documents()
        qtbot.waitUntil(lambda: _item(made, "Notes").text().startswith("Notes — 2 files"), timeout=60_000)
        assert library.get("Notes").files == 2
    finally:
        made.shutdown()
