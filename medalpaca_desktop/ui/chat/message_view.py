"""The conversation thread: one bubble per message, Markdown for answers, smooth streaming.

Tokens are appended to a buffer; a 10 Hz timer renders the growing answer
(Markdown through Qt's QTextDocument parser inside QLabel) so a fast model
never re-lays out the view per token. The final text is rendered once more
when the answer ends.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.ui.chat.citations import link_citations, source_number, sources_html, sources_of
from medalpaca_desktop.ui.chat.conversation import (
    STATUS_FAILED,
    STATUS_INTERRUPTED,
    STATUS_STOPPED,
    STATUS_STREAMING,
    Entry,
)
from medalpaca_desktop.ui.widgets.tool_button import text_button

RENDER_INTERVAL_MS = 100  # ~10 Hz while streaming

_STATUS_BADGES = {
    STATUS_STOPPED: ("Stopped", "#8a6d00", "You stopped this answer; the text so far is kept."),
    STATUS_INTERRUPTED: ("Interrupted", "#b3261e",
                         "The model process stopped while writing this answer; the text so far is kept."),
    STATUS_FAILED: ("Failed", "#b3261e", "The model could not answer."),
}


def stats_line(entry: Entry) -> str:
    """'42 tokens · 18.3 tokens/s · first token 0.21 s'."""
    stats = entry.meta.get("stats") or {}
    parts = []
    tokens = stats.get("completion_tokens", entry.token_count)
    if tokens is not None:
        parts.append(f"{tokens} tokens")
    if stats.get("tokens_per_s"):
        parts.append(f"{float(stats['tokens_per_s']):.1f} tokens/s")
    if stats.get("ttft_s") is not None:
        parts.append(f"first token {float(stats['ttft_s']):.2f} s")
    reason = stats.get("stop_reason")
    if reason == "length":
        parts.append("cut off at the token limit")
    elif reason == "context_full":
        parts.append("stopped: the context window is full")
    return " · ".join(parts)


class MessageWidget(QFrame):
    """One message: who, the text, its state, and its actions."""

    sig_copy_requested = Signal(object)
    sig_edit_requested = Signal(object)
    sig_regenerate_requested = Signal(object)
    sig_inspect_requested = Signal(object)
    sig_source_requested = Signal(object, int)  # Entry, the source number clicked

    def __init__(self, entry: Entry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entry = entry
        self._rendered = None
        user = entry.role == "user"
        self.setObjectName("userMessage" if user else "assistantMessage")
        self.setStyleSheet(
            "#userMessage { background: #e8f0fe; border: 1px solid #c6d7f5; border-radius: 8px; }"
            "#assistantMessage { background: palette(base); border: 1px solid palette(midlight);"
            " border-radius: 8px; }"
        )
        self.who_label = QLabel("<b>You</b>" if user else "<b>Assistant</b>")
        self.badge_label = QLabel()
        self.badge_label.hide()
        header = QHBoxLayout()
        header.setSpacing(6)
        header.addWidget(self.who_label)
        header.addWidget(self.badge_label)
        header.addStretch(1)

        self.copy_button = text_button("Copy", "Copy this message's text")
        self.copy_button.clicked.connect(lambda: self.sig_copy_requested.emit(self.entry))
        header.addWidget(self.copy_button)
        if user:
            self.edit_button = text_button("Edit", "Change this question and ask again (the old thread is kept "
                                                  "in the database)")
            self.edit_button.clicked.connect(lambda: self.sig_edit_requested.emit(self.entry))
            header.addWidget(self.edit_button)
            self.regenerate_button = None
            self.inspect_button = None
        else:
            self.edit_button = None
            self.inspect_button = text_button("Prompt", "Show the exact text the model received for this answer, "
                                                       "and its token count (Ctrl+I for the last answer)")
            self.inspect_button.clicked.connect(lambda: self.sig_inspect_requested.emit(self.entry))
            header.addWidget(self.inspect_button)
            self.regenerate_button = text_button("Regenerate", "Write this answer again (Ctrl+R)")
            self.regenerate_button.clicked.connect(lambda: self.sig_regenerate_requested.emit(self.entry))
            header.addWidget(self.regenerate_button)

        self.body = QLabel()
        self.body.setWordWrap(True)
        self.body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                          | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.body.setOpenExternalLinks(False)
        if not user:
            self.body.setTextInteractionFlags(self.body.textInteractionFlags()
                                              | Qt.TextInteractionFlag.LinksAccessibleByMouse)
            self.body.linkActivated.connect(self._on_link_activated)
        self.body.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.body.setTextFormat(Qt.TextFormat.PlainText if user else Qt.TextFormat.MarkdownText)
        self.sources_label = QLabel()
        self.sources_label.setWordWrap(True)
        self.sources_label.setTextFormat(Qt.TextFormat.RichText)
        self.sources_label.setOpenExternalLinks(False)
        self.sources_label.setTextInteractionFlags(Qt.TextInteractionFlag.LinksAccessibleByMouse
                                                   | Qt.TextInteractionFlag.TextSelectableByMouse)
        self.sources_label.setToolTip("Click a source to see its passage and page in the Documents panel")
        self.sources_label.linkActivated.connect(self._on_link_activated)
        self.sources_label.hide()
        self.footer = QLabel()
        self.footer.setStyleSheet("color: gray; font-size: small;")
        self.footer.hide()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 8)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addWidget(self.body)
        layout.addWidget(self.sources_label)
        layout.addWidget(self.footer)
        self.refresh()

    @Slot(str)
    def _on_link_activated(self, link: str) -> None:
        number = source_number(link)
        if number is not None:
            self.sig_source_requested.emit(self.entry, number)

    def text(self) -> str:
        return self.entry.content

    def shown_text(self) -> str:
        return self.body.text() if self.entry.content else ""

    def render_text(self) -> None:
        """Show the entry's current text (cheap when nothing changed)."""
        content = self.entry.content
        waiting = self.entry.role == "assistant" and not content and self.entry.status == STATUS_STREAMING
        sources = sources_of(self.entry.meta) if self.entry.role == "assistant" else []
        key = (content, waiting, len(sources))
        if key == self._rendered:
            return
        self._rendered = key
        self.body.setVisible(bool(content) or waiting)
        if waiting:
            self.body.setTextFormat(Qt.TextFormat.RichText)
            self.body.setText("<i style='color: gray'>Thinking…</i>")
            return
        self.body.setTextFormat(Qt.TextFormat.PlainText if self.entry.role == "user" else Qt.TextFormat.MarkdownText)
        self.body.setText(link_citations(content, sources) if sources else content)

    def refresh(self) -> None:
        """Re-read the entry: text, status badge, stats, which actions make sense."""
        self.render_text()
        status = self.entry.status
        badge = _STATUS_BADGES.get(status) if self.entry.role == "assistant" else None
        if badge:
            text, color, tip = badge
            self.badge_label.setText(f"<span style='color:{color}; font-weight:600'>{text}</span>")
            self.badge_label.setToolTip(self.entry.meta.get("error") or tip)
            self.badge_label.show()
        else:
            self.badge_label.hide()
        if self.entry.role == "assistant":
            name = self.entry.meta.get("model_name")
            self.who_label.setText("<b>Assistant</b>" + (f" <span style='color:gray'>· {name}</span>" if name else ""))
            streaming = status == STATUS_STREAMING
            line = "" if streaming else stats_line(self.entry)
            if status == STATUS_FAILED and self.entry.meta.get("error"):
                line = str(self.entry.meta["error"])
            self.footer.setText(line)
            self.footer.setVisible(bool(line))
            cited = sources_html(self.entry.meta)
            self.sources_label.setText(cited)
            self.sources_label.setVisible(bool(cited))
            if self.inspect_button is not None:
                self.inspect_button.setEnabled(bool(self.entry.meta.get("prompt")))

    def set_actions_enabled(self, enabled: bool, last_answer: bool = False) -> None:
        if self.edit_button is not None:
            self.edit_button.setEnabled(enabled)
        if self.regenerate_button is not None:
            self.regenerate_button.setVisible(last_answer)
            self.regenerate_button.setEnabled(enabled)


class MessageView(QScrollArea):
    """The visible thread of one conversation."""

    sig_edit_requested = Signal(object)  # Entry
    sig_regenerate_requested = Signal(object)  # Entry
    sig_inspect_requested = Signal(object)  # Entry
    sig_source_requested = Signal(object, int)  # Entry, source number: a citation was clicked
    sig_copied = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._inner = QWidget()
        self._inner.setObjectName("messageThread")
        self._column = QVBoxLayout(self._inner)
        self._column.setContentsMargins(12, 12, 12, 12)
        self._column.setSpacing(10)
        self._column.addStretch(1)
        self.setWidget(self._inner)
        self.widgets: list[MessageWidget] = []
        self._dirty: set[int] = set()
        self._busy = False
        self._follow = True
        self._render_timer = QTimer(self, interval=RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self._on_render_timer_timeout)
        self.verticalScrollBar().rangeChanged.connect(self._on_scroll_range_changed)
        self.verticalScrollBar().valueChanged.connect(self._on_scroll_value_changed)

    # -- contents ---------------------------------------------------------------

    def clear(self) -> None:
        for widget in self.widgets:
            self._column.removeWidget(widget)
            widget.hide()  # gone from the screen now, not only when the event loop deletes it
            widget.deleteLater()
        self.widgets = []
        self._dirty.clear()
        self._render_timer.stop()

    def set_entries(self, entries: list[Entry]) -> None:
        self.clear()
        for entry in entries:
            self._append_widget(entry)
        self._update_actions()
        self._follow = True
        self.scroll_to_bottom()

    def add_entry(self, entry: Entry) -> MessageWidget:
        widget = self._append_widget(entry)
        self._update_actions()
        self._follow = True
        self.scroll_to_bottom()
        return widget

    def _append_widget(self, entry: Entry) -> MessageWidget:
        widget = MessageWidget(entry)
        widget.sig_copy_requested.connect(self._on_message_copy_requested)
        widget.sig_edit_requested.connect(self.sig_edit_requested)
        widget.sig_regenerate_requested.connect(self.sig_regenerate_requested)
        widget.sig_inspect_requested.connect(self.sig_inspect_requested)
        widget.sig_source_requested.connect(self.sig_source_requested)
        self._column.insertWidget(self._column.count() - 1, widget)
        self.widgets.append(widget)
        return widget

    def widget_for(self, entry: Entry) -> MessageWidget | None:
        for widget in reversed(self.widgets):
            if widget.entry is entry:
                return widget
        return None

    def entries(self) -> list[Entry]:
        return [w.entry for w in self.widgets]

    # -- streaming --------------------------------------------------------------

    def entry_text_changed(self, entry: Entry) -> None:
        """The entry grew: render it at the next tick (at most ~10 times a second)."""
        widget = self.widget_for(entry)
        if widget is None:
            return
        self._dirty.add(id(widget))
        if not self._render_timer.isActive():
            self._render_timer.start()

    def entry_changed(self, entry: Entry) -> None:
        """Status or stats changed (an answer ended): render now."""
        widget = self.widget_for(entry)
        if widget is not None:
            self._dirty.discard(id(widget))
            widget.refresh()
        self._update_actions()

    @Slot()
    def _on_render_timer_timeout(self) -> None:
        if not self._dirty:
            self._render_timer.stop()
            return
        for widget in self.widgets:
            if id(widget) in self._dirty:
                widget.render_text()
        self._dirty.clear()

    def flush(self) -> None:
        self._on_render_timer_timeout()

    # -- actions ----------------------------------------------------------------

    def set_busy(self, busy: bool) -> None:
        """While an answer is written, editing and regenerating wait."""
        self._busy = busy
        self._update_actions()

    def _update_actions(self) -> None:
        last_assistant = next((w for w in reversed(self.widgets) if w.entry.role == "assistant"), None)
        for widget in self.widgets:
            widget.set_actions_enabled(not self._busy, last_answer=widget is last_assistant)

    @Slot(object)
    def _on_message_copy_requested(self, entry: Entry) -> None:
        QGuiApplication.clipboard().setText(entry.content)
        self.sig_copied.emit(entry.content)

    # -- scrolling --------------------------------------------------------------

    def scroll_to_bottom(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    @Slot(int)
    def _on_scroll_value_changed(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24

    @Slot(int, int)
    def _on_scroll_range_changed(self, minimum: int, maximum: int) -> None:
        if self._follow:  # the reader is at the end: keep the growing answer in sight
            self.verticalScrollBar().setValue(maximum)
