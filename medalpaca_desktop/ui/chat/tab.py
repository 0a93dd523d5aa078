"""The Chat tab: conversations on the left, the thread in the middle, settings on the right.

Nothing typed is ever lost: a question is committed to the database before it
is sent, an answer is saved as it streams (at least once a second), when it
ends, when it is stopped and when the model process dies under it. Private
chats are never written. The model runs in the host process (HostClient); the
GUI imports no ML library.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.chat_protocol import ChatMessage, GenerateRequest, LoadSpec
from medalpaca_desktop.core.events import Progress
from medalpaca_desktop.core.model_info import ModelInfo
from medalpaca_desktop.core.store import Store, StoreError
from medalpaca_desktop.ui.chat import export as chat_export
from medalpaca_desktop.ui.chat.composer import Composer
from medalpaca_desktop.ui.chat.conversation import (
    DEFAULT_TITLE,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_INTERRUPTED,
    STATUS_STOPPED,
    STATUS_STREAMING,
    Conversation,
    ConversationStore,
    Entry,
    title_from,
)
from medalpaca_desktop.ui.chat.conversation_list import ConversationListModel, ConversationPanel
from medalpaca_desktop.ui.chat.host_client import HostClient, HostState, LoadedInfo
from medalpaca_desktop.ui.chat.message_view import MessageView
from medalpaca_desktop.ui.chat.model_picker import ModelPicker
from medalpaca_desktop.ui.empty_state import center_column
from medalpaca_desktop.ui.chat.prompt_inspector import PromptInspector, normalize_prompt
from medalpaca_desktop.ui.chat.sampling_panel import SamplingPanel, resolve_template

SAVE_INTERVAL_MS = 500  # a streaming answer is written at least every second
UNDO_DELETE_MS = 10_000
DISCLAIMER = ("Answers come from a language model running on this computer. They are <b>not medical "
              "advice</b> and can be wrong. Nothing you type leaves this machine.")
EXPORT_FILTER = "Markdown (*.md);;JSON (*.json)"


def one_sentence(message: str, limit: int = 300) -> str:
    """The first line of an error, short enough for a banner (never a traceback)."""
    line = next((ln.strip() for ln in str(message).splitlines() if ln.strip()), "Something went wrong.")
    if line.startswith("Traceback"):
        line = "The model process reported an internal error."
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclasses.dataclass
class _Answer:
    """The answer being written (or waiting for its model to load)."""

    conv: Conversation
    entry: Entry
    model: ModelInfo
    request_id: str | None = None  # None while the model loads
    dirty: bool = False
    last_save: float = 0.0


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
        self._settings_store = settings_store
        self._store_error: str | None = None
        self._owns_store = store is None
        if store is None:
            try:
                store = Store()
            except StoreError as exc:
                self._store_error = str(exc)
                store = None
        self.store = store
        self.conv_store = ConversationStore(store) if store is not None else None
        self.host = HostClient(self, command=host_command)
        self._private_counter = itertools.count(1)
        self._answer: _Answer | None = None
        self._pending_delete: tuple[Conversation, int] | None = None
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
        self._build()
        self._build_actions()
        self._connect()

        self._save_timer = QTimer(self, interval=SAVE_INTERVAL_MS)
        self._save_timer.timeout.connect(self._on_save_timer_timeout)
        self._undo_timer = QTimer(self, singleShot=True, interval=UNDO_DELETE_MS)
        self._undo_timer.timeout.connect(self._on_undo_timer_timeout)

        self.current = self._new_conversation(private=self.conv_store is None)
        self._load_conversations()
        self._show_conversation(self.current)
        if self._store_error:
            self.show_error(f"Chats cannot be saved: {one_sentence(self._store_error)} New chats are private.")
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

        side = QScrollArea()
        side.setWidgetResizable(True)
        side.setFrameShape(QFrame.Shape.NoFrame)
        side.setWidget(self.sampling)
        side.setMinimumWidth(250)
        side.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
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

    def _make_action(self, text: str, shortcut: str | QKeySequence, slot) -> QAction:  # noqa: ANN001
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
        self.focus_action = self._make_action("Type a question", "Ctrl+L", lambda: self.composer.edit.setFocus())
        self.undo_action = self._make_action("Undo delete", "Ctrl+Z", self.undo_delete)
        self.undo_action.setEnabled(False)

    def _connect(self) -> None:
        self.panel.sig_conversation_selected.connect(self._on_panel_conversation_selected)
        self.panel.sig_new_requested.connect(self.new_chat)
        self.panel.sig_delete_requested.connect(self.delete_conversation)
        self.panel.sig_undo_requested.connect(self.undo_delete)
        self.panel.sig_search_changed.connect(self._on_panel_search_changed)
        self.picker.sig_load_requested.connect(self._on_picker_load_requested)
        self.picker.sig_unload_requested.connect(self.unload)
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
        self.view.sig_copied.connect(lambda _text: self._flash("Copied to the clipboard."))
        self.host.sig_state_changed.connect(self._on_host_state_changed)
        self.host.sig_load_progressed.connect(self._on_host_load_progressed)
        self.host.sig_model_loaded.connect(self._on_host_model_loaded)
        self.host.sig_model_unloaded.connect(self._on_host_model_unloaded)
        self.host.sig_prompt_rendered.connect(self._on_host_prompt_rendered)
        self.host.sig_token_received.connect(self._on_host_token_received)
        self.host.sig_generation_finished.connect(self._on_host_generation_finished)
        self.host.sig_request_failed.connect(self._on_host_request_failed)
        self.host.sig_host_died.connect(self._on_host_host_died)

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

    def _spec_for(self, model: ModelInfo) -> LoadSpec:
        allow_pickle = False
        if self._settings_store is not None:
            allow_pickle = bool(getattr(self._settings_store.settings, "allow_pickle_weights", False))
        n_ctx = 4096
        if model.context_length:
            n_ctx = max(256, min(n_ctx, int(model.context_length)))
        if model.kind == "adapter" and model.base_model:  # a LoRA fine-tune: its base with the adapter on top
            return LoadSpec(model=model.base_model, adapter=model.path, n_ctx=n_ctx, allow_pickle=allow_pickle)
        return LoadSpec(model=model.path, n_ctx=n_ctx, allow_pickle=allow_pickle)

    def load_model(self, model: ModelInfo) -> None:
        if self.picker.index_of(model.path) < 0:  # not found by discovery (a fresh fine-tune): list it
            self._opened = [m for m in self._opened if m.path != model.path] + [model]
            self.set_models(self._models)
        self.picker.select_path(model.path)
        self.hide_error()
        self.host.load(self._spec_for(model))
        self._update_status()

    @Slot(object)
    def _on_picker_load_requested(self, model: ModelInfo) -> None:
        self.load_model(model)

    @Slot(object)
    def _on_picker_model_selected(self, model: ModelInfo | None) -> None:
        if self._switching or model is None:
            return
        choice = self.sampling.template_choice()
        if choice == "auto":
            self.sampling.template_combo.setToolTip(
                f"Automatic: {resolve_template('auto', model.path)} for {model.name}.")

    @Slot()
    def _on_welcome_demo_requested(self) -> None:
        demo = self.picker.demo_model()
        if demo is None:
            return
        self.picker.select_path(demo.path)
        if not (self.host.loaded and self.host.loaded.path == demo.path) and self.host.state != HostState.LOADING:
            self.load_model(demo)
        self.composer.edit.setFocus()

    @Slot()
    def unload(self) -> None:
        if self._answer is not None:
            self.stop()
        self.host.unload()

    @Slot()
    def _on_reload_button_clicked(self) -> None:
        model = self.picker.current_model()
        if model is not None:
            self.load_model(model)

    # -- conversations ------------------------------------------------------------------

    def _new_conversation(self, private: bool) -> Conversation:
        key = f"private:{next(self._private_counter)}" if private else f"new:{time.time_ns()}"
        return Conversation(key=key, private=private or self.conv_store is None)

    def _load_conversations(self) -> None:
        convs = self.conv_store.load_all() if self.conv_store is not None else []
        self.list_model.set_conversations(convs)

    def conversations(self) -> list[Conversation]:
        return self.list_model.conversations()

    @Slot(bool)
    def new_chat(self, private: bool = False) -> Conversation:
        self.composer.cancel_edit()
        if self.host.state != HostState.OFF or self.host.loaded is None:
            self.hide_error()
        if self.current.is_empty and self.list_model.row_of(self.current) < 0:
            self.current.private = private or self.conv_store is None
            if private:
                self.current.key = f"private:{next(self._private_counter)}"
            self._show_conversation(self.current)
        else:
            self._show_conversation(self._new_conversation(private))
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
        # leave behind an empty unsaved chat: nothing to keep
        self.current = conv
        if self.conv_store is not None and not conv.private:
            self.conv_store.load_entries(conv)
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
        self.view.set_busy(self._answer is not None)
        self._update_header()
        self._update_stack()
        self._update_status()

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
        self.private_button.setEnabled(conv.is_empty and self.conv_store is not None
                                       and self.list_model.row_of(conv) < 0)
        self.export_button.setEnabled(not conv.is_empty)

    def _update_stack(self) -> None:
        self.stack.setCurrentWidget(self.welcome if self.current.is_empty else self.view)

    @Slot(bool)
    def _on_private_button_toggled(self, checked: bool) -> None:
        if self.current.is_empty and self.list_model.row_of(self.current) < 0:
            self.current.private = checked
            self.current.key = (f"private:{next(self._private_counter)}" if checked else f"new:{time.time_ns()}")
        self._update_header()

    def _rename(self, conv: Conversation, title: str) -> None:
        if self.conv_store is not None:
            self.conv_store.rename(conv, title)
        else:
            conv.title = title
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
        """Hide the chat at once; it is deleted for good after UNDO_DELETE_MS (or on close)."""
        if self._answer is not None and self._answer.conv is conv:
            self.stop()
            self._finish_answer(STATUS_STOPPED, {})
        self._commit_pending_delete()
        row = self.list_model.remove(conv)
        if row < 0:
            return
        self._pending_delete = (conv, row)
        self.panel.show_undo(conv.title)
        self.undo_action.setEnabled(True)
        self._undo_timer.start()
        if conv is self.current:
            next_conv = self.list_model.conversation_at(min(row, self.list_model.rowCount() - 1))
            if next_conv is not None:
                self.open_conversation(next_conv)
            else:
                self._show_conversation(self._new_conversation(False))

    @Slot()
    def undo_delete(self) -> None:
        if self._pending_delete is None:
            return
        conv, row = self._pending_delete
        self._pending_delete = None
        self._undo_timer.stop()
        self.undo_action.setEnabled(False)
        self.panel.hide_undo()
        self.list_model.add(conv, row)
        self.open_conversation(conv)

    @Slot()
    def _on_undo_timer_timeout(self) -> None:
        self._commit_pending_delete()

    def _commit_pending_delete(self) -> None:
        if self._pending_delete is None:
            return
        conv, _row = self._pending_delete
        self._pending_delete = None
        self._undo_timer.stop()
        self.undo_action.setEnabled(False)
        self.panel.hide_undo()
        if self.conv_store is not None:
            self.conv_store.delete(conv)

    @Slot(str)
    def _on_panel_search_changed(self, text: str) -> None:
        self.search(text)

    def search(self, text: str) -> None:
        """Filter the list by title and by message text."""
        needle = text.casefold().strip()
        keys: set[str] = set()
        if needle:
            for conv in self.list_model.conversations():
                if conv.loaded or conv.private:
                    texts = (e.content for e in conv.entries)
                elif self.store is not None and conv.chat_id is not None:
                    texts = (m.content for m in self.store.messages(conv.chat_id))
                else:
                    continue
                if any(needle in t.casefold() for t in texts):
                    keys.add(conv.key)
        self.panel.proxy.set_search(text, keys)

    @Slot()
    def _on_search_action_triggered(self) -> None:
        self.panel.search_edit.setFocus()
        self.panel.search_edit.selectAll()

    # -- sending ------------------------------------------------------------------------

    @Slot(str)
    def send(self, text: str) -> bool:
        """Commit the question, then ask the model; False when it cannot be sent now."""
        if not text.strip() or self._answer is not None:
            return False
        model = self.picker.current_model()
        if model is None:
            self.show_error("Choose a model first: add one from this computer or download one.", reload=False)
            return False
        conv = self.current
        editing = self.composer.editing
        if editing is not None and editing in conv.entries:
            visible = conv.visible
            if editing in visible:
                replaced = visible[visible.index(editing):]
                if self.conv_store is not None:
                    self.conv_store.supersede(conv, replaced)
                else:
                    for entry in replaced:
                        entry.meta["superseded"] = True
        self.composer.finish_edit()
        first = conv.is_empty and self.list_model.row_of(conv) < 0
        if first:
            conv.title = title_from(text) if conv.title == DEFAULT_TITLE else conv.title
            conv.model_path = model.path
            conv.system_prompt = self.sampling.system_prompt()
            conv.settings = self.sampling.to_dict()
        entry = Entry(None, "user", text)
        self._add(conv, entry)  # committed before anything is sent
        if first:
            self.list_model.add(conv, 0)
            self._switching = True
            self.panel.select(conv)
            self._switching = False
        else:
            self.list_model.move_to_top(conv)
            self.list_model.refresh(conv)
        self.composer.edit.clear()
        self.view.set_entries(conv.visible)
        self._update_header()
        self._update_stack()
        self._start_answer(conv, model)
        return True

    def _add(self, conv: Conversation, entry: Entry) -> None:
        if self.conv_store is not None:
            self.conv_store.add(conv, entry)
        else:
            conv.entries.append(entry)

    def _save(self, conv: Conversation, entry: Entry) -> None:
        if self.conv_store is not None:
            self.conv_store.save(conv, entry)

    def _start_answer(self, conv: Conversation, model: ModelInfo) -> None:
        meta = {"status": STATUS_STREAMING, "model": model.path, "model_name": model.name}
        entry = Entry(None, "assistant", "", meta=meta)
        self._add(conv, entry)
        if conv is self.current:
            self.view.add_entry(entry)
        self._answer = _Answer(conv, entry, model, last_save=time.monotonic())
        self._set_busy(True)
        spec = self._spec_for(model)
        loaded = self.host.loaded
        if (loaded is not None and loaded.path == spec.model and loaded.adapter == spec.adapter
                and self.host.state == HostState.READY):
            self._dispatch()
        else:
            loading = self.host.loading_spec
            if loading is None or (loading.model, loading.adapter) != (spec.model, spec.adapter):
                self.load_model(model)
        self._update_status()

    def _dispatch(self) -> None:
        answer = self._answer
        assert answer is not None
        conv, entry = answer.conv, answer.entry
        history = [e for e in conv.visible if e is not entry]
        messages = [ChatMessage(e.role, e.content) for e in history
                    if e.role in ("user", "system") or (e.role == "assistant" and e.content)]
        choice = self.sampling.template_choice()
        template = resolve_template(choice, answer.model.path)
        sampling = self.sampling.settings()
        system = self.sampling.system_prompt()
        request = GenerateRequest(messages=messages, template=template, system=system, sampling=sampling,
                                  conversation_id=conv.key)
        if template == "raw":
            request.prompt = next((m.content for m in reversed(messages) if m.role == "user"), "")
        entry.meta.update({"template": template, "template_choice": choice, "system": system,
                           "sampling": dataclasses.asdict(sampling), "request_id": request.id})
        if self.host.loaded is not None:
            entry.meta["backend"] = self.host.loaded.backend
        answer.request_id = request.id
        self._save(conv, entry)
        if not self.host.generate(request):
            self._fail_answer("The model is not ready to answer; load it again and retry.")
            return
        self._save_timer.start()

    def _set_busy(self, busy: bool) -> None:
        self.composer.set_busy(busy)
        self.view.set_busy(busy)
        self.stop_action.setEnabled(busy)
        self.regenerate_action.setEnabled(not busy)

    @Slot()
    def stop(self) -> None:
        """Stop the answer being written; the text so far is kept."""
        answer = self._answer
        if answer is None:
            return
        if answer.request_id is None:  # still loading the model: nothing was asked yet
            self._finish_answer(STATUS_STOPPED, {"stop_reason": "stopped"})
            return
        self.host.stop()

    @Slot(object)
    def regenerate(self, entry: Entry | None = None) -> bool:
        conv = self.current
        visible = conv.visible
        if self._answer is not None or not visible:
            return False
        last = visible[-1]
        if entry is not None and entry is not last:
            return False
        model = self.picker.current_model()
        if model is None:
            self.show_error("Choose a model first: add one from this computer or download one.", reload=False)
            return False
        if last.role == "assistant":
            if self.conv_store is not None:
                self.conv_store.supersede(conv, [last])
            else:
                last.meta["superseded"] = True
        elif last.role != "user":
            return False
        self.view.set_entries(conv.visible)
        self._start_answer(conv, model)
        return True

    @Slot()
    def regenerate_last(self) -> None:
        self.regenerate(None)

    @Slot(object)
    def edit_message(self, entry: Entry) -> None:
        if self._answer is not None or entry.role != "user":
            return
        self.composer.start_edit(entry, entry.content)

    def inspect(self, entry: Entry) -> PromptInspector:
        if self._inspector is not None:
            self._inspector.close()
        prompt = entry.meta.get("prompt")
        self._inspector = PromptInspector(prompt, self.current.title, self)
        self._inspector.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self._inspector.destroyed.connect(self._on_inspector_destroyed)
        self._inspector.show()
        return self._inspector

    def _on_inspector_destroyed(self, *args: object) -> None:
        self._inspector = None

    @Slot()
    def inspect_last(self) -> PromptInspector | None:
        entry = next((e for e in reversed(self.current.visible) if e.role == "assistant"), None)
        return self.inspect(entry) if entry is not None else None

    @Slot()
    def copy_last(self) -> None:
        from PySide6.QtGui import QGuiApplication

        entry = next((e for e in reversed(self.current.visible) if e.role == "assistant"), None)
        if entry is not None:
            QGuiApplication.clipboard().setText(entry.content)
            self._flash("Last answer copied to the clipboard.")

    # -- host events --------------------------------------------------------------------

    def _answer_for(self, request_id: str) -> _Answer | None:
        answer = self._answer
        if answer is None or answer.request_id is None:
            return None
        if request_id and request_id != answer.request_id:
            return None
        return answer

    @Slot(str)
    def _on_host_state_changed(self, state: str) -> None:
        host_state = HostState(state)
        spec = self.host.loading_spec
        self.picker.set_host_state(host_state, self.host.loaded, spec.model if spec else None)
        self._update_status()

    @Slot(object)
    def _on_host_load_progressed(self, event: Progress) -> None:
        self.picker.set_load_progress(event)

    @Slot(object)
    def _on_host_model_loaded(self, info: LoadedInfo) -> None:
        self.picker.set_host_state(self.host.state, info)
        self.hide_error()
        answer = self._answer
        if answer is not None and answer.request_id is None:
            if answer.model.path == info.path or not info.path:
                self._dispatch()
            else:
                self.load_model(answer.model)
        self._update_status()

    @Slot()
    def _on_host_model_unloaded(self) -> None:
        self.picker.set_host_state(self.host.state, None)
        self._update_status()

    @Slot(str, dict)
    def _on_host_prompt_rendered(self, request_id: str, data: dict) -> None:
        answer = self._answer_for(request_id)
        if answer is None:
            return
        prompt = normalize_prompt(data)
        if self.host.loaded is not None and self.host.loaded.context_length and "context_length" not in prompt:
            prompt["context_length"] = self.host.loaded.context_length
        answer.entry.meta["prompt"] = prompt
        if prompt.get("dropped_messages"):
            self._flash(f"The {prompt['dropped_messages']} oldest messages did not fit the context window "
                        "and were left out of the prompt.")
        self._save(answer.conv, answer.entry)
        answer.last_save = time.monotonic()
        if answer.conv is self.current:
            self.view.entry_changed(answer.entry)

    @Slot(str, str)
    def _on_host_token_received(self, request_id: str, text: str) -> None:
        answer = self._answer_for(request_id)
        if answer is None:
            return
        answer.entry.content += text
        answer.dirty = True
        if answer.conv is self.current:
            self.view.entry_text_changed(answer.entry)
        if time.monotonic() - answer.last_save >= 1.0:
            self._save_now(answer)

    def _save_now(self, answer: _Answer) -> None:
        self._save(answer.conv, answer.entry)
        answer.dirty = False
        answer.last_save = time.monotonic()

    @Slot()
    def _on_save_timer_timeout(self) -> None:
        answer = self._answer
        if answer is None:
            self._save_timer.stop()
            return
        if answer.dirty:
            self._save_now(answer)
        if answer.conv is self.current:
            self._update_status()

    @Slot(str, dict)
    def _on_host_generation_finished(self, request_id: str, data: dict) -> None:
        if self._answer_for(request_id) is None:
            return
        status = STATUS_STOPPED if data.get("stop_reason") == "stopped" else STATUS_DONE
        self._finish_answer(status, data)

    @Slot(str, str, str)
    def _on_host_request_failed(self, request_id: str, kind: str, message: str) -> None:
        answer = self._answer
        sentence = one_sentence(message)
        if answer is not None and (answer.request_id is None or not request_id or request_id == answer.request_id):
            if answer.request_id is None:
                self._fail_answer(self._load_failure(answer.model.name, sentence), reload=False)
            else:
                self._fail_answer(sentence)
            return
        if self.host.state != HostState.GENERATING and kind != "not_loaded":
            model = self.picker.current_model()
            name = model.name if model else "the model"
            if self.host.loaded is None:
                self.show_error(self._load_failure(name, sentence), reload=False)
            else:
                self.show_error(sentence, reload=False)

    @staticmethod
    def _load_failure(name: str, sentence: str) -> str:
        if sentence.lower().startswith(("cannot load", "could not load", "model not found", "model folder not found")):
            return sentence
        return f"Could not load {name}: {sentence}"

    @Slot(str)
    def _on_host_host_died(self, message: str) -> None:
        answer = self._answer
        if answer is not None:
            if answer.request_id is None:
                self._fail_answer(message, reload=True)
                return
            answer.entry.meta["error"] = message
            self._finish_answer(STATUS_INTERRUPTED, {})
            self.show_error(f"{message} The partial answer is kept and marked as interrupted.", reload=True)
        else:
            self.show_error(message, reload=True)

    def _fail_answer(self, message: str, reload: bool = False) -> None:
        answer = self._answer
        if answer is None:
            return
        answer.entry.meta["error"] = message
        self._finish_answer(STATUS_FAILED, {})
        self.show_error(message, reload=reload)

    def _finish_answer(self, status: str, data: dict[str, Any]) -> None:
        answer = self._answer
        if answer is None:
            return
        self._answer = None
        self._save_timer.stop()
        entry = answer.entry
        entry.meta["status"] = status
        if isinstance(data.get("text"), str) and status in (STATUS_DONE, STATUS_STOPPED):
            entry.content = data["text"]  # the host's own account of the answer
        if data:
            entry.meta["stats"] = {k: v for k, v in data.items() if k not in ("request_id", "text")}
            if isinstance(data.get("completion_tokens"), int):
                entry.token_count = data["completion_tokens"]
        self._save(answer.conv, entry)
        if answer.conv is self.current:
            self.view.flush()
            self.view.entry_changed(entry)
        self.list_model.refresh(answer.conv)
        self._set_busy(False)
        self._update_status()

    # -- status, errors, export ---------------------------------------------------------

    def show_error(self, message: str, reload: bool = False) -> None:
        self.error_label.setText(message)
        self.reload_button.setVisible(reload)
        self.error_bar.show()
        self.sig_status_changed.emit(message)

    def hide_error(self) -> None:
        self.error_bar.hide()

    def error_text(self) -> str:
        return self.error_label.text() if not self.error_bar.isHidden() else ""

    def _flash(self, text: str) -> None:
        self.status_label.setText(text)
        QTimer.singleShot(3000, self._update_status)

    def status_text(self) -> str:
        return self.status_label.text()

    def _current_stats(self) -> dict[str, Any] | None:
        """Numbers of the shown chat's last answer, if it finished normally."""
        last = next((e for e in reversed(self.current.visible) if e.role == "assistant"), None)
        if last is None or last.status not in (STATUS_DONE, STATUS_STOPPED):
            return None
        return last.meta.get("stats") or None

    def _last_prompt(self) -> dict[str, Any] | None:
        last = next((e for e in reversed(self.current.visible) if e.role == "assistant"), None)
        return last.meta.get("prompt") if last is not None else None

    def _update_status(self) -> None:
        answer = self._answer
        loaded = self.host.loaded
        if answer is not None:
            if answer.request_id is None:
                text = f"Loading {answer.model.name}…"
            else:
                text = f"Writing… {len(answer.entry.content)} characters. Esc stops."
        elif (stats := self._current_stats()) is not None:
            parts = []
            if stats.get("tokens_per_s"):
                parts.append(f"{float(stats['tokens_per_s']):.1f} tokens/s")
            if stats.get("ttft_s") is not None:
                parts.append(f"first token after {float(stats['ttft_s']):.2f} s")
            used = (stats.get("prompt_tokens") or 0) + (stats.get("completion_tokens") or 0)
            context = (loaded.context_length if loaded is not None else None) or (
                (self._last_prompt() or {}).get("context_length"))
            if used and context:
                share = 100 * used / context
                parts.append(f"context: {used:,} of {context:,} tokens ({share:.0f}%)")
            elif used:
                parts.append(f"context: {used:,} tokens")
            text = " · ".join(parts) or "Ready."
        elif self.host.state == HostState.LOADING:
            text = "Loading the model…"
        elif loaded is not None:
            text = f"Ready: {loaded.summary()}."
        else:
            text = "No model loaded. The selected model loads when you send a question."
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
        """Closing: keep the answer being written, delete what was deleted, end the host."""
        answer = self._answer
        if answer is not None:
            answer.entry.meta["error"] = "The app was closed while this answer was being written."
            self._finish_answer(STATUS_INTERRUPTED, {})
        self._commit_pending_delete()
        self.host.shutdown()
        if self._owns_store and self.store is not None:
            self.store.close()
            self.store = None
            self.conv_store = None
