"""The Chat tab: conversations on the left, the thread in the middle, settings on the right.

Layout and wiring only: what a chat does (saving, asking the model, the answer
as it streams, delete with undo, search) is the ChatSession's
(ui/chat/session.py); this widget shows what it announces and hands it what the
user chose. The model runs in the host process; the GUI imports no ML library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.events import Progress
from medalpaca_desktop.core.model_info import ModelInfo
from medalpaca_desktop.core.payloads import Loaded
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.ui.chat import export as chat_export
from medalpaca_desktop.ui.chat.citations import retrieval_summary, sources_of
from medalpaca_desktop.ui.chat.composer import Composer
from medalpaca_desktop.ui.chat.conversation import DEFAULT_TITLE, Conversation, Entry
from medalpaca_desktop.ui.chat.conversation_list import ConversationListModel, ConversationPanel
from medalpaca_desktop.ui.chat.documents_panel import DocumentsPanel
from medalpaca_desktop.ui.chat.host_client import HostState
from medalpaca_desktop.ui.chat.message_view import MessageView
from medalpaca_desktop.ui.chat.model_picker import ModelPicker
from medalpaca_desktop.ui.chat.prompt_inspector import PromptInspector
from medalpaca_desktop.ui.chat.sampling_panel import SamplingPanel, resolve_template
from medalpaca_desktop.ui.chat.session import AnswerSettings, ChatSession, one_sentence
from medalpaca_desktop.ui.empty_state import center_column

DISCLAIMER = ("Answers come from a language model running on this computer. They are <b>not medical "
              "advice</b> and can be wrong. Nothing you type leaves this machine.")
EXPORT_FILTER = "Markdown (*.md);;JSON (*.json)"


class WelcomePage(QWidget):
    """What an empty conversation shows: how to start, and the demo model on a first run."""

    sig_demo_requested = Signal()
    sig_add_model_requested = Signal()
    sig_download_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title_label = QLabel("Ask a local model")
        font = self.title_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.5)
        font.setBold(True)
        self.title_label.setFont(font)
        self.title_label.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.text_label = QLabel()
        self.text_label.setWordWrap(True)
        self.text_label.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.text_label.setTextFormat(Qt.TextFormat.RichText)

        self.demo_card = QFrame()
        self.demo_card.setObjectName("demoCard")
        self.demo_card.setStyleSheet("#demoCard { background: palette(alternate-base); border: 1px solid "
                                     "palette(mid); border-radius: 8px; }")
        self.demo_label = QLabel()
        self.demo_label.setWordWrap(True)
        self.demo_button = QPushButton("Chat with the demo model")
        self.demo_button.setDefault(True)
        self.demo_button.clicked.connect(self.sig_demo_requested)
        card = QVBoxLayout(self.demo_card)
        card.addWidget(self.demo_label)
        card.addWidget(self.demo_button, 0, Qt.AlignmentFlag.AlignLeft)

        self.add_button = QPushButton("Add a model…")
        self.add_button.setToolTip("Add a GGUF file or a folder of models on this computer")
        self.add_button.clicked.connect(self.sig_add_model_requested)
        self.download_button = QPushButton("Download…")
        self.download_button.setToolTip("Download a medical model from Hugging Face")
        self.download_button.clicked.connect(self.sig_download_requested)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.download_button)
        buttons.addStretch(1)

        self.tips_label = QLabel(
            "<span style='color:gray'>Enter sends · Shift+Enter new line · Esc stops · Ctrl+N new chat · "
            "Ctrl+Shift+N private chat · Ctrl+R regenerate · Ctrl+I prompt of the last answer · "
            "Ctrl+E export</span>")
        self.tips_label.setWordWrap(True)
        self.tips_label.setAlignment(Qt.AlignmentFlag.AlignHCenter)

        column = QVBoxLayout()
        column.setSpacing(14)
        column.addWidget(self.title_label)
        column.addWidget(self.text_label)
        column.addWidget(self.demo_card)
        column.addLayout(buttons)
        column.addWidget(self.tips_label)
        center_column(self, column, 560)
        self.show_models([], None, searching=True)

    def show_models(self, models: list[ModelInfo], demo: ModelInfo | None, searching: bool = False) -> None:
        others = [m for m in models if not m.is_demo]
        if searching and not models:
            self.text_label.setText("Looking for models on this computer…")
        elif others:
            self.text_label.setText("Pick a model above and type a question below. The model loads when you "
                                    "send; answers appear as they are written.")
        elif demo is not None:
            self.text_label.setText("No model of your own yet. You can try the app right away with the small "
                                    "demo model that came with it, or add or download a medical model.")
        else:
            self.text_label.setText("No models found yet. Add a GGUF file or a Hugging Face model folder from "
                                    "this computer, or download one.")
        self.demo_card.setVisible(demo is not None and not others)
        if demo is not None:
            self.demo_label.setText(f"<b>{demo.name}</b><br><span style='color:#8a6d00'>⚠ {demo.note}</span>")


class ChatTab(QWidget):
    """Chat with local models."""

    sig_download_requested = Signal()
    sig_add_model_requested = Signal()
    sig_status_changed = Signal(str)

    def __init__(self, store: Store | None = None, settings_store: Any = None,
                 host_command: list[str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = ChatSession(store, settings_store, host_command, self)
        self._inspector: PromptInspector | None = None
        self._models: list[ModelInfo] = []
        self._opened: list[ModelInfo] = []  # models opened from elsewhere (a fine-tune's result), kept listed
        self._switching = False

        self.list_model = ConversationListModel(self, renamer=self._rename)
        self.panel = ConversationPanel(self.list_model)
        self.picker = ModelPicker()
        self.view = MessageView()
        self.welcome = WelcomePage()
        self.composer = Composer()
        self.sampling = SamplingPanel()
        self.documents = DocumentsPanel(self.session.store)
        self._build()
        self._build_actions()
        self._connect()

        self.current = self.session.new_conversation()
        self._load_conversations()
        self._show_conversation(self.current)
        if self.session.store_error:
            self.show_error(f"Chats cannot be saved: {one_sentence(self.session.store_error)} New chats are private.")
        self._update_status()

    # -- building ---------------------------------------------------------------------

    def _build(self) -> None:
        self.disclaimer = QLabel(DISCLAIMER)
        self.disclaimer.setObjectName("chatDisclaimer")
        self.disclaimer.setWordWrap(True)
        self.disclaimer.setStyleSheet("#chatDisclaimer { background: #eef6ee; border: 1px solid #b9d8b9;"
                                      " border-radius: 4px; padding: 4px 8px; color: #1e4620; }")

        self.error_bar = QFrame()
        self.error_bar.setObjectName("chatErrorBar")
        self.error_bar.setStyleSheet("#chatErrorBar { background: #fdecea; border: 1px solid #e6a39c;"
                                     " border-radius: 4px; } #chatErrorBar QLabel { color: #611a15; }")
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reload_button = QPushButton("Reload model")
        self.reload_button.setToolTip("Start the model again; the conversation stays as it is")
        self.reload_button.clicked.connect(self._on_reload_button_clicked)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Hide this message")
        close.clicked.connect(self.error_bar.hide)
        error_row = QHBoxLayout(self.error_bar)
        error_row.setContentsMargins(8, 4, 4, 4)
        error_row.addWidget(self.error_label, 1)
        error_row.addWidget(self.reload_button)
        error_row.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.error_bar.hide()

        self.title_label = QLabel(DEFAULT_TITLE)
        font = self.title_label.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.title_label.setFont(font)
        self.private_button = QToolButton()
        self.private_button.setText("Private chat")
        self.private_button.setCheckable(True)
        self.private_button.setToolTip("A private chat is kept in memory only: nothing of it is written to disk "
                                       "and it is gone when the app closes. Choose before the first question.")
        self.private_button.toggled.connect(self._on_private_button_toggled)
        self.export_button = QToolButton()
        self.export_button.setText("Export…")
        self.export_button.setToolTip("Save this chat as Markdown or JSON (Ctrl+E)")
        self.export_button.clicked.connect(self._on_export_action_triggered)
        header = QHBoxLayout()
        header.addWidget(self.title_label, 1)
        header.addWidget(self.private_button)
        header.addWidget(self.export_button)

        self.stack = QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.view)

        self.status_label = QLabel()
        self.status_label.setStyleSheet("color: gray;")
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        center = QWidget()
        column = QVBoxLayout(center)
        column.setContentsMargins(6, 6, 6, 6)
        column.addWidget(self.picker)
        column.addWidget(self.disclaimer)
        column.addWidget(self.error_bar)
        column.addLayout(header)
        column.addWidget(self.stack, 1)
        column.addWidget(self.composer)
        column.addWidget(self.status_label)

        settings_scroll = QScrollArea()
        settings_scroll.setWidgetResizable(True)
        settings_scroll.setFrameShape(QFrame.Shape.NoFrame)
        settings_scroll.setWidget(self.sampling)
        settings_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        side = QTabWidget()
        side.setDocumentMode(True)
        side.addTab(settings_scroll, "Settings")
        side.addTab(self.documents, "Documents")
        side.setTabToolTip(1, "Your documents: answers from the ticked collections cite their pages (Ctrl+Shift+D)")
        side.setMinimumWidth(250)
        self.side = side

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(6, 6, 0, 6)
        left_layout.addWidget(self.panel)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(center)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 0)
        splitter.setSizes([230, 740, 290])
        splitter.setChildrenCollapsible(False)
        self.splitter = splitter
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    def _make_action(self, text: str, shortcut: str | QKeySequence, slot) -> QAction:
        action = QAction(text, self)
        action.setShortcut(QKeySequence(shortcut))
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        self.new_action = self._make_action("New chat", "Ctrl+N", lambda: self.new_chat(private=False))
        self.new_private_action = self._make_action("New private chat", "Ctrl+Shift+N",
                                                    lambda: self.new_chat(private=True))
        self.stop_action = self._make_action("Stop", "Esc", self.stop)
        self.stop_action.setEnabled(False)
        self.regenerate_action = self._make_action("Regenerate", "Ctrl+R", self.regenerate_last)
        self.inspect_action = self._make_action("Inspect prompt", "Ctrl+I", self.inspect_last)
        self.copy_action = self._make_action("Copy last answer", "Ctrl+Shift+C", self.copy_last)
        self.export_action = self._make_action("Export chat", "Ctrl+E", self._on_export_action_triggered)
        self.search_action = self._make_action("Search chats", "Ctrl+F", self._on_search_action_triggered)
        self.documents_action = self._make_action("Documents", "Ctrl+Shift+D", self.show_documents)
        self.undo_action = self._make_action("Undo delete", "Ctrl+Z", self.undo_delete)
        self.undo_action.setEnabled(False)

    def _connect(self) -> None:
        self.panel.sig_conversation_selected.connect(self._on_panel_conversation_selected)
        self.panel.sig_new_requested.connect(self.new_chat)
        self.panel.sig_delete_requested.connect(self.delete_conversation)
        self.panel.sig_undo_requested.connect(self.undo_delete)
        self.panel.sig_search_changed.connect(self.search)
        self.picker.sig_load_requested.connect(self.load_model)
        self.picker.sig_unload_requested.connect(self.session.unload)
        self.picker.sig_add_model_requested.connect(self.sig_add_model_requested)
        self.picker.sig_download_requested.connect(self.sig_download_requested)
        self.picker.sig_model_selected.connect(self._on_picker_model_selected)
        self.welcome.sig_demo_requested.connect(self._on_welcome_demo_requested)
        self.welcome.sig_add_model_requested.connect(self.sig_add_model_requested)
        self.welcome.sig_download_requested.connect(self.sig_download_requested)
        self.composer.sig_send_requested.connect(self.send)
        self.composer.sig_stop_requested.connect(self.stop)
        self.view.sig_edit_requested.connect(self.edit_message)
        self.view.sig_regenerate_requested.connect(self.regenerate)
        self.view.sig_inspect_requested.connect(self.inspect)
        self.view.sig_source_requested.connect(self.show_source)
        self.documents.sig_attached_changed.connect(self._on_documents_attached_changed)
        self.view.sig_copied.connect(lambda _text: self._flash("Copied to the clipboard."))
        host = self.session.host
        host.sig_state_changed.connect(self._on_host_state_changed)
        host.sig_load_progressed.connect(self._on_host_load_progressed)
        host.sig_model_loaded.connect(self._on_host_model_loaded)
        host.sig_model_unloaded.connect(self._on_host_model_unloaded)
        session = self.session
        session.sig_question_added.connect(self._on_session_question_added)
        session.sig_answer_started.connect(self._on_session_answer_started)
        session.sig_answer_text.connect(self._on_session_answer_text)
        session.sig_answer_changed.connect(self._on_session_answer_changed)
        session.sig_answer_finished.connect(self._on_session_answer_finished)
        session.sig_error.connect(self.show_error)
        session.sig_error_cleared.connect(self.hide_error)
        session.sig_notice.connect(self._flash)
        session.sig_status_changed.connect(self._update_status)
        session.sig_delete_pending.connect(self._on_session_delete_pending)
        session.sig_delete_settled.connect(self._on_session_delete_settled)

    # -- models -----------------------------------------------------------------------

    @Slot(object, object)
    def set_models(self, models: list[ModelInfo], problems: object = None) -> None:
        """The model manager's discovery results (its sig_discovery_finished)."""
        self._models = list(models)
        paths = {m.path for m in self._models}
        self.picker.set_models(self._models + [m for m in self._opened if m.path not in paths])
        others = [m for m in self.picker.models() if not m.is_demo]
        if not others and self.picker.demo_model() is not None:
            self.picker.select_path(self.picker.demo_model().path)
        self.welcome.show_models(self.picker.models(), self.picker.demo_model())

    @Slot(object)
    def load_model(self, model: ModelInfo) -> None:
        if self.picker.index_of(model.path) < 0:  # not found by discovery (a fresh fine-tune): list it
            self._opened = [m for m in self._opened if m.path != model.path] + [model]
            self.set_models(self._models)
        self.picker.select_path(model.path)
        self.session.load_model(model)

    @Slot(object)
    def _on_picker_model_selected(self, model: ModelInfo | None) -> None:
        if self._switching or model is None:
            return
        if self.sampling.template_choice() == "auto":
            self.sampling.template_combo.setToolTip(
                f"Automatic: {resolve_template('auto', model.path)} for {model.name}.")

    @Slot()
    def _on_welcome_demo_requested(self) -> None:
        demo = self.picker.demo_model()
        if demo is None:
            return
        self.picker.select_path(demo.path)
        host = self.session.host
        if not (host.loaded and host.loaded.path == demo.path) and host.state != HostState.LOADING:
            self.load_model(demo)
        self.composer.edit.setFocus()

    @Slot()
    def _on_reload_button_clicked(self) -> None:
        model = self.picker.current_model()
        if model is not None:
            self.load_model(model)

    @Slot(str)
    def _on_host_state_changed(self, state: str) -> None:
        spec = self.session.host.loading_spec
        self.picker.set_host_state(HostState(state), self.session.host.loaded, spec.model if spec else None)

    @Slot(object)
    def _on_host_load_progressed(self, event: Progress) -> None:
        self.picker.set_load_progress(event)

    @Slot(object)
    def _on_host_model_loaded(self, info: Loaded) -> None:
        self.picker.set_host_state(self.session.host.state, info)

    @Slot()
    def _on_host_model_unloaded(self) -> None:
        self.picker.set_host_state(self.session.host.state, None)

    # -- conversations ------------------------------------------------------------------

    def _load_conversations(self) -> None:
        self.list_model.set_conversations(self.session.load_conversations())

    def conversations(self) -> list[Conversation]:
        return self.list_model.conversations()

    def _is_new(self, conv: Conversation) -> bool:
        """Empty and not in the list yet: it can still become private (or not)."""
        return conv.is_empty and self.list_model.row_of(conv) < 0

    @Slot(bool)
    def new_chat(self, private: bool = False) -> Conversation:
        self.composer.cancel_edit()
        host = self.session.host
        if host.state != HostState.OFF or host.loaded is None:
            self.hide_error()
        if self._is_new(self.current):
            self.session.set_private(self.current, private)
            self._show_conversation(self.current)
        else:
            self._show_conversation(self.session.new_conversation(private))
        self.panel.select(None)
        self.composer.edit.setFocus()
        return self.current

    def open_conversation(self, conv: Conversation) -> None:
        self.panel.select(conv)
        if self.current is not conv:
            self._show_conversation(conv)

    @Slot(object)
    def _on_panel_conversation_selected(self, conv: Conversation | None) -> None:
        if conv is None or conv is self.current or self._switching:
            return
        self._show_conversation(conv)

    def _show_conversation(self, conv: Conversation) -> None:
        if self.current is not conv:
            self.composer.cancel_edit()
        self.current = conv  # an empty unsaved chat left behind has nothing to keep
        self.session.open(conv)
        self._switching = True
        try:
            settings = self._settings_of(conv)
            if settings:
                self.sampling.from_dict(settings)
            if conv.model_path and self.picker.index_of(conv.model_path) >= 0 and conv.visible:
                self.picker.select_path(conv.model_path)
        finally:
            self._switching = False
        self.view.set_entries(conv.visible)
        self.view.set_busy(self.session.busy)
        self.documents.set_attached(self._documents_of(conv))
        self._update_header()
        self._update_stack()
        self._update_status()

    @staticmethod
    def _documents_of(conv: Conversation) -> list[str]:
        """The collections a chat answers from: as its last answer did, else as it was set before its first."""
        for entry in reversed(conv.visible):
            if entry.role == "assistant" and entry.meta.get("sampling"):
                return list(entry.meta.get("documents") or [])
        return list(conv.settings.get("documents") or [])

    @Slot(list)
    def _on_documents_attached_changed(self, names: list[str]) -> None:
        self.current.settings["documents"] = list(names)  # this chat's next question uses them
        self._update_status()

    def show_documents(self) -> None:
        self.side.setCurrentWidget(self.documents)

    @Slot(object, int)
    def show_source(self, entry: Entry, number: int) -> bool:
        """A clicked citation: its passage and page in the Documents panel."""
        source = next((s for s in sources_of(entry.meta) if s.n == number), None)
        if source is None:
            return False
        self.documents.show_source(source)
        self.show_documents()
        return True

    @staticmethod
    def _settings_of(conv: Conversation) -> dict[str, Any]:
        """The settings a chat used last: its last answer's, else those it was created with."""
        for entry in reversed(conv.visible):
            if entry.role == "assistant" and entry.meta.get("sampling"):
                return {"sampling": entry.meta["sampling"], "template": entry.meta.get("template_choice", "auto"),
                        "system": entry.meta.get("system")}
        return dict(conv.settings)

    def _update_header(self) -> None:
        conv = self.current
        title = conv.title
        if conv.private:
            title += "  (private: not saved)"
        self.title_label.setText(title)
        self.private_button.blockSignals(True)
        self.private_button.setChecked(conv.private)
        self.private_button.blockSignals(False)
        self.private_button.setEnabled(self.session.persistent and self._is_new(conv))
        self.export_button.setEnabled(not conv.is_empty)

    def _update_stack(self) -> None:
        self.stack.setCurrentWidget(self.welcome if self.current.is_empty else self.view)

    @Slot(bool)
    def _on_private_button_toggled(self, checked: bool) -> None:
        if self._is_new(self.current):
            self.session.set_private(self.current, checked)
        self._update_header()

    def _rename(self, conv: Conversation, title: str) -> None:
        self.session.rename(conv, title)
        if conv is self.current:
            self._update_header()

    def rename_conversation(self, conv: Conversation, title: str) -> None:
        row = self.list_model.row_of(conv)
        if row >= 0:
            self.list_model.setData(self.list_model.index(row), title)
        else:
            self._rename(conv, title)

    @Slot(object)
    def delete_conversation(self, conv: Conversation) -> None:
        """Hide the chat at once; the session deletes it for good unless undone in time."""
        self.session.commit_pending_delete()
        row = self.list_model.remove(conv)
        if row < 0:
            return
        self.session.delete(conv, row)
        if conv is self.current:
            next_conv = self.list_model.conversation_at(min(row, self.list_model.rowCount() - 1))
            if next_conv is not None:
                self.open_conversation(next_conv)
            else:
                self._show_conversation(self.session.new_conversation())

    @Slot()
    def undo_delete(self) -> None:
        pending = self.session.undo_delete()
        if pending is not None:
            conv, row = pending
            self.list_model.add(conv, row)
            self.open_conversation(conv)

    @Slot(object)
    def _on_session_delete_pending(self, conv: Conversation) -> None:
        self.panel.show_undo(conv.title)
        self.undo_action.setEnabled(True)

    @Slot()
    def _on_session_delete_settled(self) -> None:
        self.undo_action.setEnabled(False)
        self.panel.hide_undo()

    @Slot(str)
    def search(self, text: str) -> None:
        """Filter the list by title and by message text."""
        self.panel.proxy.set_search(text, self.session.matching(self.list_model.conversations(), text))

    @Slot()
    def _on_search_action_triggered(self) -> None:
        self.panel.search_edit.setFocus()
        self.panel.search_edit.selectAll()

    # -- asking -------------------------------------------------------------------------

    def _answer_settings(self, model: ModelInfo | None) -> AnswerSettings:
        choice = self.sampling.template_choice()
        documents = self.documents.attached()
        return AnswerSettings(template_choice=choice, template=resolve_template(choice, model.path if model else ""),
                              system=self.sampling.system_prompt(), sampling=self.sampling.settings(),
                              panel={**self.sampling.to_dict(), "documents": documents}, documents=documents)

    @Slot(str)
    def send(self, text: str) -> bool:
        """Commit the question, then ask the model; False when it cannot be sent now."""
        model = self.picker.current_model()
        editing = self.composer.editing
        replacing = editing if editing is not None and editing in self.current.entries else None
        if self.session.busy or not text.strip():
            return False
        return self.session.send(self.current, text, model, self._answer_settings(model), replacing)

    @Slot(object)
    def _on_session_question_added(self, conv: Conversation) -> None:
        self.composer.finish_edit()
        if self.list_model.row_of(conv) < 0:
            self.list_model.add(conv, 0)
            self._switching = True
            self.panel.select(conv)
            self._switching = False
        else:
            self.list_model.move_to_top(conv)
            self.list_model.refresh(conv)
        self.composer.edit.clear()
        if conv is self.current:
            self._update_header()
            self._update_stack()

    @Slot(object)
    def regenerate(self, entry: Entry | None = None) -> bool:
        model = self.picker.current_model()
        return self.session.regenerate(self.current, model, self._answer_settings(model), entry)

    @Slot()
    def regenerate_last(self) -> None:
        self.regenerate(None)

    @Slot()
    def stop(self) -> None:
        self.session.stop()

    @Slot(object)
    def edit_message(self, entry: Entry) -> None:
        if not self.session.busy and entry.role == "user":
            self.composer.start_edit(entry, entry.content)

    def _set_busy(self, busy: bool) -> None:
        self.composer.set_busy(busy)
        self.view.set_busy(busy)
        self.stop_action.setEnabled(busy)
        self.regenerate_action.setEnabled(not busy)

    @Slot(object, object)
    def _on_session_answer_started(self, conv: Conversation, entry: Entry) -> None:
        if conv is self.current:
            self.view.set_entries(conv.visible)
            self._update_header()
            self._update_stack()
        self._set_busy(True)

    @Slot(object, object)
    def _on_session_answer_text(self, conv: Conversation, entry: Entry) -> None:
        if conv is self.current:
            self.view.entry_text_changed(entry)

    @Slot(object, object)
    def _on_session_answer_changed(self, conv: Conversation, entry: Entry) -> None:
        if conv is self.current:
            self.view.entry_changed(entry)

    @Slot(object, object)
    def _on_session_answer_finished(self, conv: Conversation, entry: Entry) -> None:
        if conv is self.current:
            self.view.flush()
            self.view.entry_changed(entry)
        self.list_model.refresh(conv)
        self._set_busy(False)

    # -- the last answer ----------------------------------------------------------------

    def _last_answer(self) -> Entry | None:
        return next((e for e in reversed(self.current.visible) if e.role == "assistant"), None)

    def inspect(self, entry: Entry) -> PromptInspector:
        if self._inspector is not None:
            self._inspector.close()
        self._inspector = PromptInspector(entry.meta.get("prompt"), self.current.title, self,
                                          retrieved=retrieval_summary(entry.meta))
        self._inspector.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self._inspector.destroyed.connect(self._on_inspector_destroyed)
        self._inspector.show()
        return self._inspector

    def _on_inspector_destroyed(self, *args: object) -> None:
        self._inspector = None

    @Slot()
    def inspect_last(self) -> PromptInspector | None:
        entry = self._last_answer()
        return self.inspect(entry) if entry is not None else None

    @Slot()
    def copy_last(self) -> None:
        entry = self._last_answer()
        if entry is not None:
            QGuiApplication.clipboard().setText(entry.content)
            self._flash("Last answer copied to the clipboard.")

    # -- status, errors, export ---------------------------------------------------------

    @Slot(str, bool)
    def show_error(self, message: str, reload: bool = False) -> None:
        self.error_label.setText(message)
        self.reload_button.setVisible(reload)
        self.error_bar.show()
        self.sig_status_changed.emit(message)

    @Slot()
    def hide_error(self) -> None:
        self.error_bar.hide()

    def error_text(self) -> str:
        return self.error_label.text() if not self.error_bar.isHidden() else ""

    @Slot(str)
    def _flash(self, text: str) -> None:
        self.status_label.setText(text)
        QTimer.singleShot(3000, self._update_status)

    def status_text(self) -> str:
        return self.status_label.text()

    @Slot()
    def _update_status(self) -> None:
        text = self.session.status_text(self.current)
        if documents := self.documents.attached():
            text = (text + " · " if text else "") + f"Answers from {', '.join(documents)}"
        self.status_label.setText(text)

    @Slot()
    def _on_export_action_triggered(self) -> None:
        if self.current.is_empty:
            return
        safe = "".join(c if c.isalnum() or c in " -_" else "_" for c in self.current.title).strip() or "chat"
        path, chosen = QFileDialog.getSaveFileName(self, "Export chat", str(Path.home() / f"{safe}.md"),
                                                   EXPORT_FILTER)
        if not path:
            return
        if not Path(path).suffix:
            path += ".json" if "JSON" in chosen else ".md"
        self.export_current(path)

    def export_current(self, path: str | Path) -> Path | None:
        try:
            written = chat_export.export_conversation(self.current, path)
        except OSError as exc:
            self.show_error(f"The chat could not be exported: {exc.strerror or exc}.")
            return None
        self._flash(f"Exported to {written}.")
        return written

    # -- life cycle ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """Closing: the session keeps the answer being written, deletes what was deleted, ends the host."""
        self.documents.shutdown()
        self.session.shutdown()
