"""ChatSession without a single widget: send, stream, stop, regenerate, host death, no database.

Every test talks to a real `python -m medalpaca_desktop.inference.host` on the
tiny GGUF fixture (the demo model where an answer must last long enough to be
stopped or killed); nothing here fakes the host.
"""

from __future__ import annotations

import os
import signal

import pytest
from helpers.ui_support import isolate_user_home

from medalpaca_desktop.core import paths
from medalpaca_desktop.core.chat_protocol import SamplingSettings
from medalpaca_desktop.core.models import inspect_model
from medalpaca_desktop.core.store import MEMORY_DATABASE, Store
from medalpaca_desktop.ui.chat.conversation import STATUS_DONE, STATUS_INTERRUPTED, STATUS_STOPPED, Entry
from medalpaca_desktop.ui.chat.host_client import HostState
from medalpaca_desktop.ui.chat.session import NO_MODEL, AnswerSettings, ChatSession

ANSWER_MS = 60_000


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)


@pytest.fixture
def make_session(qapp):
    sessions: list[ChatSession] = []

    def make(**kwargs) -> ChatSession:
        session = ChatSession(**kwargs)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.shutdown()


class Recorder:
    """Everything a session announced, in order."""

    def __init__(self, session: ChatSession) -> None:
        self.events: list[tuple[str, object]] = []
        self.text: list[str] = []
        session.sig_answer_started.connect(lambda _c, e: self.events.append(("started", e)))
        session.sig_answer_text.connect(lambda _c, e: self.text.append(e.content))
        session.sig_answer_finished.connect(lambda _c, e: self.events.append(("finished", e)))
        session.sig_error.connect(lambda message, reload: self.events.append(("error", (message, reload))))

    def errors(self) -> list[tuple[str, bool]]:
        return [value for name, value in self.events if name == "error"]  # type: ignore[misc]


def _settings(max_tokens: int = 12, temperature: float = 0.0) -> AnswerSettings:
    return AnswerSettings(template_choice="auto", template="chat", system=None,
                          sampling=SamplingSettings(temperature=temperature, max_tokens=max_tokens),
                          panel={"template": "auto"})


def _wait(qtbot, session: ChatSession, timeout: int = ANSWER_MS) -> None:
    qtbot.waitUntil(lambda: session.answer is None, timeout=timeout)


def test_send_streams_saves_and_regenerates(qtbot, make_session, tiny_gguf):
    session = make_session()
    assert session.persistent and session.store.path == paths.database_path()
    seen = Recorder(session)
    model = inspect_model(tiny_gguf)
    conv = session.new_conversation()
    assert not conv.private

    assert session.send(conv, "Hello tiny model", model, _settings())
    rows = session.store.messages(conv.chat_id)
    assert [m.role for m in rows] == ["user", "assistant"]  # the question is on disk before the host hears of it
    assert rows[0].content == "Hello tiny model" and rows[1].meta["status"] == "streaming"
    assert conv.title == "Hello tiny model" and conv.model_path == model.path and conv.settings == {"template": "auto"}
    assert not session.send(conv, "A second question while busy", model, _settings())
    _wait(qtbot, session)

    answer = conv.visible[-1]
    assert answer.meta["status"] == STATUS_DONE, answer.meta
    assert seen.text and seen.text[-1] == answer.content and [n for n, _ in seen.events] == ["started", "finished"]
    assert "Hello tiny model" in answer.meta["prompt"]["text"] and answer.meta["prompt"]["tokens"] > 0
    assert answer.meta["prompt"]["context_length"] == session.host.loaded.context_length
    saved = session.store.messages(conv.chat_id)[-1]
    assert saved.content == answer.content and saved.meta["status"] == STATUS_DONE
    assert saved.token_count == answer.meta["stats"]["completion_tokens"] > 0
    assert "tokens/s" in session.status_text(conv)
    assert session.host.state == HostState.READY and session.host.loaded.backend == "llamacpp"

    # regenerate: a new answer; the old one stays in the database, superseded
    assert not session.regenerate(conv, model, _settings(), entry=conv.visible[0])  # only the last entry
    assert session.regenerate(conv, model, _settings(max_tokens=6))
    _wait(qtbot, session)
    rows = session.store.messages(conv.chat_id)
    assert len(rows) == 3 and rows[1].meta.get("superseded") and rows[2].meta["status"] == STATUS_DONE
    assert [e.role for e in conv.visible] == ["user", "assistant"]

    # edit and resend: the thread from the edited question on is replaced
    assert session.send(conv, "Hello again", model, _settings(max_tokens=4), replacing=conv.visible[0])
    _wait(qtbot, session)
    assert conv.visible[0].content == "Hello again" and len(conv.visible) == 2
    assert conv.title == "Hello tiny model"  # a chat keeps its title
    assert len(session.store.messages(conv.chat_id)) == 5


def test_stop_while_loading_and_while_writing(qtbot, make_session, demo_gguf):
    session = make_session()
    model = inspect_model(demo_gguf)
    conv = session.new_conversation()
    assert session.send(conv, "Stopped before the model is loaded", model, _settings())
    assert session.answer.request_id is None and session.host.state == HostState.LOADING
    assert "Loading" in session.status_text(conv)
    session.stop()  # nothing was asked yet: the answer ends at once
    assert session.answer is None and conv.visible[-1].meta["status"] == STATUS_STOPPED
    qtbot.waitUntil(lambda: session.host.state == HostState.READY, timeout=ANSWER_MS)

    seen = Recorder(session)
    assert session.regenerate(conv, model, _settings(max_tokens=400))
    qtbot.waitUntil(lambda: len(seen.text) >= 2, timeout=ANSWER_MS)
    session.stop()
    _wait(qtbot, session)
    stopped = conv.visible[-1]
    assert stopped.meta["status"] == STATUS_STOPPED and stopped.meta["stats"]["completion_tokens"] < 400
    assert session.store.messages(conv.chat_id)[-1].content == stopped.content
    assert session.host.state == HostState.READY and not seen.errors()  # the model stays loaded


def test_host_death_keeps_the_partial_answer_and_offers_a_reload(qtbot, make_session, demo_gguf):
    session = make_session()
    seen = Recorder(session)
    model = inspect_model(demo_gguf)
    conv = session.new_conversation()
    assert session.send(conv, "Write a long essay about the history of medicine.", model,
                        _settings(max_tokens=400, temperature=0.7))
    qtbot.waitUntil(lambda: len(seen.text) >= 2, timeout=ANSWER_MS)
    os.kill(session.host.pid(), signal.SIGKILL)
    _wait(qtbot, session)
    answer = conv.visible[-1]
    assert answer.meta["status"] == STATUS_INTERRUPTED and answer.content
    assert "stopped unexpectedly" in answer.meta["error"]
    message, reload = seen.errors()[-1]
    assert "partial answer is kept" in message and reload
    saved = session.store.messages(conv.chat_id)[-1]
    assert saved.meta["status"] == STATUS_INTERRUPTED and saved.content == answer.content
    assert session.host.state == HostState.OFF
    session.load_model(model)  # the reload it offers
    qtbot.waitUntil(lambda: session.host.state == HostState.READY, timeout=ANSWER_MS)


def test_without_a_database_chats_are_private_and_in_memory(qtbot, make_session, tiny_gguf):
    paths.database_path().write_bytes(b"this is not an SQLite database" * 100)
    session = make_session()
    assert not session.persistent and "cannot be opened" in session.store_error
    assert str(session.store.path) == MEMORY_DATABASE
    seen = Recorder(session)
    conv = session.new_conversation(private=False)
    assert conv.private and conv.key.startswith("private:")
    session.set_private(conv, False)
    assert conv.private  # nowhere to save it

    model = inspect_model(tiny_gguf)
    assert not session.send(conv, "Hello?", None, _settings())
    assert seen.errors() == [(NO_MODEL, False)]
    assert session.send(conv, "Hello tiny model", model, _settings(max_tokens=4))
    _wait(qtbot, session)
    assert [e.role for e in conv.visible] == ["user", "assistant"] and conv.visible[-1].status == STATUS_DONE
    assert session.regenerate(conv, model, _settings(max_tokens=4))
    _wait(qtbot, session)
    assert len(conv.entries) == 3 and conv.entries[1].superseded and len(conv.visible) == 2
    assert session.matching([conv], "TINY") == {conv.key} and session.matching([conv], "absent") == set()
    assert session.store.list_chats() == [] and session.load_conversations() == []

    session.delete(conv, 0)  # delete with undo: restored, then deleted for good
    assert session.undo_delete() == (conv, 0) and session.undo_delete() is None
    session.delete(conv, 0)
    session.commit_pending_delete()
    assert session.pending_delete is None
    assert paths.database_path().read_bytes().startswith(b"this is not")  # the unreadable file is left untouched


def test_deleting_a_saved_chat_waits_for_the_undo_time(make_session, tmp_path):
    store = Store(tmp_path / "chats.sqlite3")
    session = make_session(store=store, host_command=["/nonexistent-host-binary"])
    conv = session.new_conversation()
    session.conv_store.add(conv, Entry(None, "user", "metformin dose"))
    settled: list[bool] = []
    session.sig_delete_settled.connect(lambda: settled.append(True))
    session.delete(conv, 0)
    assert session.pending_delete == (conv, 0) and len(store.list_chats()) == 1
    assert session.matching(session.load_conversations(), "METFORMIN") == {conv.key}
    session.commit_pending_delete()
    assert store.list_chats() == [] and settled == [True]
    session.shutdown()
    assert store.list_chats() == []  # a store it was given stays open

