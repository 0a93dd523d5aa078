"""Chat tab pieces without a model: presets, sampling fields, composer keys, list, export, inspector."""

from __future__ import annotations

import dataclasses
import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox

from medalpaca_desktop.core.chat_protocol import SamplingSettings
from medalpaca_desktop.core.model_info import DEMO_MODEL_NOTE, ModelInfo
from medalpaca_desktop.core.payloads import Prompt
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.ui.chat import export as chat_export
from medalpaca_desktop.ui.chat.composer import Composer
from medalpaca_desktop.ui.chat.conversation import (
    STATUS_INTERRUPTED,
    STATUS_STREAMING,
    Conversation,
    ConversationStore,
    Entry,
    title_from,
)
from medalpaca_desktop.ui.chat.conversation_list import ConversationListModel
from medalpaca_desktop.ui.chat.message_view import MessageView
from medalpaca_desktop.ui.chat.model_picker import ModelPicker
from medalpaca_desktop.ui.chat.prompt_inspector import PromptInspector, describe_prompt, prompt_meta
from medalpaca_desktop.ui.chat.sampling_panel import PRESETS, SamplingPanel, resolve_template
from medalpaca_desktop.ui.chat.session import one_sentence
from medalpaca_desktop.ui.chat.tab import ChatTab


def _demo(path="/m/demo.gguf") -> ModelInfo:
    return ModelInfo(path=path, name="SmolLM2-135M-Instruct (demo)", kind="gguf", quantization="Q4_1",
                     source="demo", note=DEMO_MODEL_NOTE, chat_template="{{x}}")


@pytest.fixture
def tab(qtbot):
    widget = ChatTab(host_command=["/nonexistent-host-binary"])
    qtbot.addWidget(widget)
    widget.resize(1200, 700)
    yield widget
    widget.shutdown()


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_sampling(name):
    settings = SamplingSettings.from_dict(PRESETS[name])
    settings.validate()
    assert set(PRESETS[name]) == {f.name for f in dataclasses.fields(SamplingSettings)}
    assert PRESETS["Precise (temperature 0)"]["temperature"] == 0


def test_sampling_panel_fields_come_from_the_dataclass(qtbot):
    panel = SamplingPanel()
    qtbot.addWidget(panel)
    assert list(panel.fields) == [f.name for f in dataclasses.fields(SamplingSettings)]
    for f in dataclasses.fields(SamplingSettings):
        assert panel.fields[f.name].toolTip() == f.metadata["help"]
    temperature = panel.fields["temperature"]
    assert isinstance(temperature, QDoubleSpinBox) and temperature.maximum() == 2.0
    assert isinstance(panel.fields["max_tokens"], QSpinBox)
    panel.preset_combo.setCurrentText("Precise (temperature 0)")
    assert panel.settings().temperature == 0.0
    temperature.setValue(0.3)
    assert panel.preset_combo.currentText() == "Custom"
    panel.fields["stop"].setText("###| END ")
    assert panel.settings().stop == ["###", "END"]
    panel.set_template_choice("medalpaca")
    panel.set_system_prompt("Be brief.")
    data = panel.to_dict()
    other = SamplingPanel()
    qtbot.addWidget(other)
    other.from_dict(data)
    assert other.to_dict() == data
    assert resolve_template("auto", "/x/medalpaca-7b") == "medalpaca"
    assert resolve_template("auto", "/x/llama.gguf") == "chat"
    assert resolve_template("raw", "/x/medalpaca-7b") == "raw"


def test_composer_enter_sends_shift_enter_newline_escape_stops(qtbot):
    composer = Composer()
    qtbot.addWidget(composer)
    sent: list[str] = []
    composer.sig_send_requested.connect(sent.append)
    qtbot.keyClicks(composer.edit, "first line")
    qtbot.keyClick(composer.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(composer.edit, "second")
    assert composer.text() == "first line\nsecond" and not sent
    qtbot.keyClick(composer.edit, Qt.Key.Key_Return)
    assert sent == ["first line\nsecond"]
    composer.edit.clear()
    qtbot.keyClick(composer.edit, Qt.Key.Key_Return)
    assert len(sent) == 1  # nothing to send
    composer.set_busy(True)
    with qtbot.waitSignal(composer.sig_stop_requested, timeout=1000):
        qtbot.keyClick(composer.edit, Qt.Key.Key_Escape)
    assert composer.stop_button.isVisibleTo(composer) and not composer.send_button.isVisibleTo(composer)


def test_message_view_streams_without_rendering_each_token(qtbot):
    view = MessageView()
    qtbot.addWidget(view)
    view.resize(600, 400)
    view.show()
    entry = Entry(None, "assistant", "", meta={"status": STATUS_STREAMING})
    widget = view.add_entry(entry)
    renders = []
    original = widget.render_text
    widget.render_text = lambda: (renders.append(1), original())[1]
    for piece in ["**Bold", "** answer", " with `code`", "\n\n- one\n- two"]:
        entry.content += piece
        view.entry_text_changed(entry)
    assert len(renders) == 0  # nothing rendered per token
    qtbot.waitUntil(lambda: "Bold" in widget.shown_text(), timeout=2000)
    assert len(renders) <= 2
    entry.meta["status"] = "done"
    entry.meta["stats"] = {"completion_tokens": 7, "tokens_per_s": 12.5}
    view.entry_changed(entry)
    assert widget.body.textFormat() == Qt.TextFormat.MarkdownText
    assert "12.5 tokens/s" in widget.footer.text()


def test_conversation_list_model_rename_and_store(qtbot, tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    cs = ConversationStore(store)
    conv = Conversation(key="new:1")
    cs.add(conv, Entry(None, "user", "What is the first-line therapy for hypertension?"))
    assert conv.chat_id is not None and conv.key == f"db:{conv.chat_id}"
    model = ConversationListModel(renamer=cs.rename)
    model.set_conversations(cs.load_all())
    index = model.index(0)
    assert model.setData(index, "  Hypertension   questions ")
    assert store.list_chats()[0].title == "Hypertension questions"
    assert model.data(index) == "Hypertension questions"
    assert not model.setData(index, "   ")
    assert title_from("  a\nb  ") == "a b"
    assert len(title_from("x" * 200)) <= 48


def test_export_markdown_and_json(tmp_path):
    conv = Conversation(key="private:1", title="Sepsis", private=True, system_prompt="Be brief.")
    conv.entries = [
        Entry(None, "user", "Define sepsis."),
        Entry(None, "assistant", "Old answer", meta={"superseded": True}),
        Entry(None, "assistant", "Life-threatening **organ dysfunction**.",
              meta={"status": STATUS_INTERRUPTED, "model_name": "tiny", "template": "chat",
                    "prompt": {"text": "<|user|>Define sepsis.", "tokens": 9}}),
    ]
    md = chat_export.export_conversation(conv, tmp_path / "c.md").read_text()
    assert md.startswith("# Sepsis")
    assert "## You" in md and "Define sepsis." in md and "**organ dysfunction**" in md
    assert "Old answer" not in md and "interrupted" in md and "not medical advice" in md
    data = json.loads(chat_export.export_conversation(conv, tmp_path / "c.json").read_text())
    assert data["format"] == "medalpaca-desktop-chat" and data["system_prompt"] == "Be brief."
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][1]["status"] == "interrupted" and data["messages"][1]["prompt_tokens"] == 9


def test_prompt_inspector_names_the_fallback(qtbot):
    prompt = prompt_meta(Prompt(text="<|im_start|>user\nHi<|im_end|>\n", tokens=11,
                                 template="chat", fallback="chatml", dropped_messages=2))
    assert prompt["tokens"] == 11
    assert "no chat template" in describe_prompt(prompt) and "ChatML" in describe_prompt(prompt)
    assert "2 oldest messages" in describe_prompt(prompt)
    dialog = PromptInspector(prompt)
    qtbot.addWidget(dialog)
    assert dialog.text_edit.toPlainText() == "<|im_start|>user\nHi<|im_end|>\n"
    assert not dialog.fallback_label.isHidden()
    qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == prompt["text"]
    plain = PromptInspector(prompt_meta(Prompt(text="x", tokens=1, template="chat")))
    qtbot.addWidget(plain)
    assert plain.fallback_label.isHidden() and "model's own chat template" in plain.summary_label.text()


def test_model_picker_labels_demo_and_hides_adapters(qtbot):
    picker = ModelPicker()
    qtbot.addWidget(picker)
    adapter = ModelInfo(path="/m/lora", name="lora", kind="adapter")
    other = ModelInfo(path="/m/med.gguf", name="medalpaca-7b", kind="gguf", quantization="Q8_0")
    picker.set_models([_demo(), adapter, other])
    assert [m.name for m in picker.models()] == ["medalpaca-7b", "SmolLM2-135M-Instruct (demo)"]
    picker.select_path("/m/demo.gguf")
    assert "not medical" in picker.note_label.text() and not picker.note_label.isHidden()
    with qtbot.waitSignal(picker.sig_download_requested, timeout=1000):
        qtbot.mouseClick(picker.download_button, Qt.MouseButton.LeftButton)


def test_first_run_offers_the_demo_model(qtbot, tab):
    tab.show()
    assert tab.stack.currentWidget() is tab.welcome
    assert "not medical advice" in tab.disclaimer.text() and "leaves this machine" in tab.disclaimer.text()
    tab.set_models([_demo()], [])
    assert tab.welcome.demo_card.isVisibleTo(tab.welcome)
    assert "not medical, for trying the app" in tab.welcome.demo_label.text()
    assert tab.picker.current_model().is_demo
    with qtbot.waitSignal(tab.sig_download_requested, timeout=1000):
        qtbot.mouseClick(tab.welcome.download_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(tab.sig_add_model_requested, timeout=1000):
        qtbot.mouseClick(tab.welcome.add_button, Qt.MouseButton.LeftButton)
    tab.set_models([_demo(), ModelInfo(path="/m/x.gguf", name="x", kind="gguf")], [])
    assert not tab.welcome.demo_card.isVisibleTo(tab.welcome)


def test_sending_without_a_model_says_so(qtbot, tab):
    tab.set_models([], [])
    assert not tab.send("Hello?")
    assert "Choose a model first" in tab.error_text()


def test_host_that_cannot_start_is_one_sentence_and_question_is_kept(qtbot, tab):
    tab.set_models([_demo()], [])
    assert tab.send("Is the question kept?")
    qtbot.waitUntil(lambda: tab.session.answer is None, timeout=10_000)
    assert "\n" not in tab.error_text() and tab.error_text()
    chats = tab.session.store.list_chats()
    assert len(chats) == 1
    messages = tab.session.store.messages(chats[0].id)
    assert messages[0].content == "Is the question kept?"
    assert messages[1].meta["status"] == "failed"


def test_delete_with_undo_and_search(qtbot, tab):
    cs = tab.session.conv_store
    for title, text in (("Asthma", "inhaled corticosteroids"), ("Diabetes", "metformin dose")):
        conv = Conversation(key="new", title=title)
        cs.add(conv, Entry(None, "user", text))
    tab._load_conversations()
    assert [c.title for c in tab.conversations()] == ["Diabetes", "Asthma"]
    tab.search("METFORMIN")
    assert tab.panel.proxy.rowCount() == 1
    tab.search("asth")
    assert tab.panel.proxy.rowCount() == 1
    tab.search("")
    assert tab.panel.proxy.rowCount() == 2
    asthma = tab.conversations()[1]
    tab.open_conversation(asthma)
    assert tab.current is asthma and tab.view.entries()[0].content == "inhaled corticosteroids"
    tab.delete_conversation(asthma)
    assert [c.title for c in tab.conversations()] == ["Diabetes"]
    assert not tab.panel.undo_bar.isHidden()
    assert len(tab.session.store.list_chats()) == 2  # not gone yet: undo is possible
    tab.undo_delete()
    assert [c.title for c in tab.conversations()] == ["Diabetes", "Asthma"]
    tab.delete_conversation(asthma)
    tab.session.commit_pending_delete()  # the undo time ran out
    assert [c.title for c in tab.session.store.list_chats()] == ["Diabetes"]


def test_one_sentence_never_shows_a_traceback():
    assert one_sentence("Traceback (most recent call last):\n  File x") == \
        "The model process reported an internal error."
    assert one_sentence("\n  The file is corrupt.\nDetail") == "The file is corrupt."
