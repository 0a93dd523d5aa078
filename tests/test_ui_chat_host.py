"""The Chat tab against real host processes: tiny GGUF and the demo model, offscreen.

Every test starts `python -m medalpaca_desktop.inference.host` for real; nothing
here fakes the host.
"""

from __future__ import annotations

import os
import signal

import pytest
from helpers.tiny_models import write_corrupt_gguf
from helpers.ui_support import NO_GPU_REPORT, fake_probe_command, isolate_user_home
from PySide6.QtCore import Qt

from medalpaca_desktop.core.model_info import ModelInfo
from medalpaca_desktop.core.models import inspect_model
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.ui.chat.host_client import HostState
from medalpaca_desktop.ui.chat.tab import ChatTab
from medalpaca_desktop.ui.devices import DeviceProbe
from medalpaca_desktop.ui.main_window import TAB_CHAT, MainWindow

LOAD_MS = 60_000
ANSWER_MS = 60_000


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)


@pytest.fixture
def make_tab(qtbot):
    tabs: list[ChatTab] = []

    def make() -> ChatTab:
        tab = ChatTab()
        qtbot.addWidget(tab)
        tab.resize(1200, 760)
        tab.show()
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        tab.shutdown()


def _use(tab: ChatTab, path, *, max_tokens: int = 16, temperature: float = 0.0) -> ModelInfo:
    info = inspect_model(path)
    tab.set_models([info], [])
    tab.sampling.fields["temperature"].setValue(temperature)
    tab.sampling.fields["max_tokens"].setValue(max_tokens)
    return info


def _wait_answer(qtbot, tab: ChatTab, timeout: int = ANSWER_MS) -> None:
    qtbot.waitUntil(lambda: tab.session.answer is None, timeout=timeout)


def _last_answer(tab: ChatTab):
    return [e for e in tab.current.visible if e.role == "assistant"][-1]


def test_send_stream_regenerate_edit_on_tiny_gguf(qtbot, make_tab, tiny_gguf):
    tab = make_tab()
    _use(tab, tiny_gguf, max_tokens=12)
    tokens: list[str] = []
    tab.session.host.sig_token_received.connect(lambda _rid, text: tokens.append(text))

    # send: the question is on disk before the host hears of it
    assert tab.send("Hello tiny model")
    chat = tab.session.store.list_chats()[0]
    assert [m.role for m in tab.session.store.messages(chat.id)][0] == "user"
    _wait_answer(qtbot, tab)
    answer = _last_answer(tab)
    assert answer.meta["status"] == "done", answer.meta
    assert tokens and answer.content == "".join(tokens)
    qtbot.waitUntil(lambda: tab.view.widget_for(answer).shown_text() != "", timeout=2000)
    prompt = answer.meta["prompt"]
    assert "Hello tiny model" in prompt["text"] and prompt["tokens"] > 0
    saved = tab.session.store.messages(chat.id)[-1]
    assert saved.content == answer.content and saved.meta["status"] == "done"
    assert saved.token_count == answer.meta["stats"]["completion_tokens"]
    assert "tokens/s" in tab.status_text()
    assert tab.session.host.loaded is not None and tab.session.host.loaded.backend == "llamacpp"
    assert "llama.cpp" in tab.picker.state_label.text()

    # regenerate: a new answer replaces the last one; the old one stays in the database
    tab.sampling.fields["max_tokens"].setValue(8)
    tab.sampling.fields["temperature"].setValue(0.0)
    before = len(tab.session.store.messages(chat.id))
    assert tab.regenerate()
    _wait_answer(qtbot, tab)
    rows = tab.session.store.messages(chat.id)
    assert len(rows) == before + 1 and rows[-2].meta.get("superseded")
    assert len(tab.current.visible) == 2

    # edit and resend: the thread from the edited question on is replaced
    first_question = tab.current.visible[0]
    tab.edit_message(first_question)
    assert tab.composer.text() == "Hello tiny model"
    tab.composer.set_text("Hello again")
    qtbot.keyClick(tab.composer.edit, Qt.Key.Key_Return)
    _wait_answer(qtbot, tab)
    assert [e.role for e in tab.current.visible] == ["user", "assistant"]
    assert tab.current.visible[0].content == "Hello again"
    live = [m for m in tab.session.store.messages(chat.id) if not m.meta.get("superseded")]
    assert [m.content for m in live][0] == "Hello again" and len(live) == 2


def test_demo_model_exchange_and_history_after_restart(qtbot, make_tab, demo_gguf):
    tab = make_tab()
    _use(tab, demo_gguf, max_tokens=24)
    assert tab.send("What is the capital of France? Answer in one word.")
    _wait_answer(qtbot, tab)
    answer = _last_answer(tab)
    assert answer.meta["status"] == "done" and answer.content.strip()
    assert "Paris" in answer.content
    prompt = answer.meta["prompt"]
    assert "<|im_start|>user\nWhat is the capital of France?" in prompt["text"]
    inspector = tab.inspect_last()
    assert inspector.text_edit.toPlainText() == prompt["text"]
    assert f"{prompt['tokens']:,} tokens" in inspector.summary_label.text()
    inspector.close()
    shown = tab.view.widget_for(answer).shown_text()
    assert shown == answer.content

    # stop (Esc): the tiny model writes ~10,000 tokens/s, so stopping is shown on the demo model
    tab.sampling.fields["max_tokens"].setValue(400)
    tokens: list[str] = []
    tab.session.host.sig_token_received.connect(lambda _rid, text: tokens.append(text))
    assert tab.send("Write a long essay about the history of medicine.")
    qtbot.waitUntil(lambda: len(tokens) >= 2, timeout=ANSWER_MS)
    qtbot.keyClick(tab.composer.edit, Qt.Key.Key_Escape)
    _wait_answer(qtbot, tab)
    stopped = _last_answer(tab)
    assert stopped.meta["status"] == "stopped", stopped.meta
    assert stopped.meta["stats"]["completion_tokens"] < 400
    saved = tab.session.store.messages(tab.current.chat_id)[-1]
    assert saved.content == stopped.content and saved.meta["status"] == "stopped"
    assert tab.session.host.state == HostState.READY  # the model stays loaded
    title = tab.current.title
    tab.shutdown()

    again = make_tab()  # a restart: same MEDALPACA_DESKTOP_HOME, a new tab and host
    assert [c.title for c in again.conversations()] == [title]
    again.open_conversation(again.conversations()[0])
    assert [e.content for e in again.current.visible] == [
        "What is the capital of France? Answer in one word.", answer.content,
        "Write a long essay about the history of medicine.", stopped.content]
    assert "Stopped" in again.view.widgets[-1].badge_label.text()
    assert again.view.widgets[1].entry.meta["prompt"]["text"] == prompt["text"]


def test_host_killed_mid_answer_keeps_the_partial_answer(qtbot, make_tab, demo_gguf):
    tab = make_tab()
    _use(tab, demo_gguf, max_tokens=400, temperature=0.7)
    tokens: list[str] = []
    tab.session.host.sig_token_received.connect(lambda _rid, text: tokens.append(text))
    assert tab.send("Write a long essay about the history of medicine.")
    qtbot.waitUntil(lambda: len(tokens) >= 2, timeout=ANSWER_MS)
    os.kill(tab.session.host.pid(), signal.SIGKILL)
    _wait_answer(qtbot, tab)
    answer = _last_answer(tab)
    assert answer.meta["status"] == "interrupted"
    assert "stopped unexpectedly" in tab.error_text() and "partial answer is kept" in tab.error_text()
    assert tab.reload_button.isVisibleTo(tab)
    widget = tab.view.widget_for(answer)
    assert widget.badge_label.isVisibleTo(widget) and "Interrupted" in widget.badge_label.text()
    saved = tab.session.store.messages(tab.current.chat_id)[-1]
    assert saved.meta["status"] == "interrupted" and saved.content == answer.content and saved.content
    qtbot.mouseClick(tab.reload_button, Qt.MouseButton.LeftButton)  # offered: reload the model
    qtbot.waitUntil(lambda: tab.session.host.state == HostState.READY, timeout=LOAD_MS)


def test_corrupt_gguf_is_an_error_message_not_a_crash(qtbot, make_tab, tmp_path, tiny_gguf):
    tab = make_tab()
    broken = write_corrupt_gguf(tmp_path / "broken.gguf")
    info = ModelInfo(path=str(broken), name="broken", kind="gguf")
    tab.set_models([info, inspect_model(tiny_gguf)], [])
    tab.picker.select_path(str(broken))
    assert tab.send("Does this load?")
    _wait_answer(qtbot, tab)
    assert "broken.gguf" in tab.error_text() and "GGUF" in tab.error_text()
    assert "Traceback" not in tab.error_text() and "\n" not in tab.error_text()
    answer = _last_answer(tab)
    assert answer.meta["status"] == "failed"
    assert tab.session.store.messages(tab.current.chat_id)[0].content == "Does this load?"
    assert tab.session.host.is_running()  # the host stays usable: load the good model
    tab.picker.select_path(str(tiny_gguf))
    tab.sampling.fields["max_tokens"].setValue(4)
    assert tab.regenerate()
    _wait_answer(qtbot, tab)
    assert _last_answer(tab).meta["status"] == "done"


def test_private_chat_leaves_no_rows(qtbot, make_tab, tiny_gguf):
    tab = make_tab()
    _use(tab, tiny_gguf, max_tokens=4)
    conv = tab.new_chat(private=True)
    assert tab.private_button.isChecked()
    assert tab.send("A private question about a patient")
    _wait_answer(qtbot, tab)
    assert conv.private and len(conv.visible) == 2
    assert "(private)" in tab.list_model.data(tab.list_model.index(0))
    store = Store(tab.session.store.path)
    assert store.list_chats() == []
    assert store._query("SELECT COUNT(*) FROM messages")[0][0] == 0
    store.close()


def test_main_window_feeds_the_chat_tab_the_demo_model(qtbot):
    probe = DeviceProbe(command=fake_probe_command(NO_GPU_REPORT))
    window = MainWindow(device_probe=probe)
    probe.setParent(window)
    qtbot.addWidget(window)
    try:
        window.show()
        window.start()
        window.tabs.setCurrentIndex(TAB_CHAT)
        qtbot.waitUntil(lambda: window.chat_tab.picker.demo_model() is not None, timeout=30_000)
        chat = window.chat_tab
        assert window.tabs.widget(TAB_CHAT) is chat
        assert chat.picker.current_model().is_demo
        assert chat.welcome.demo_card.isVisibleTo(chat.welcome)
        assert "not medical" in chat.welcome.demo_label.text()
    finally:
        window.shutdown()
