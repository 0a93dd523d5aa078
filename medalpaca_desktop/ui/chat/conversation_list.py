"""The list of conversations: an item model, a search filter and the panel around them."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.ui.chat.conversation import Conversation

_NO_PARENT = QModelIndex()  # Qt's default argument, built once (an invalid index holds no state)

CONVERSATION_ROLE = Qt.ItemDataRole.UserRole + 1
KEY_ROLE = Qt.ItemDataRole.UserRole + 2

_Index = QModelIndex | QPersistentModelIndex


def _age(timestamp: float) -> str:
    then = _dt.datetime.fromtimestamp(timestamp)
    now = _dt.datetime.now()
    if then.date() == now.date():
        return then.strftime("%H:%M")
    if (now.date() - then.date()).days < 7:
        return then.strftime("%a %H:%M")
    return then.strftime("%d %b %Y")


class ConversationListModel(QAbstractListModel):
    """Conversations, newest first. Editing a title renames the chat (via `renamer`)."""

    def __init__(self, parent=None, renamer: Callable[[Conversation, str], None] | None = None) -> None:
        super().__init__(parent)
        self._items: list[Conversation] = []
        self._renamer = renamer

    # -- Qt ---------------------------------------------------------------------

    def rowCount(self, parent: _Index = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._items):
            return None
        conv = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{conv.title} (private)" if conv.private else conv.title
        if role == Qt.ItemDataRole.EditRole:
            return conv.title
        if role == Qt.ItemDataRole.ToolTipRole:
            where = ("Private: kept in memory only, gone when the app closes"
                     if conv.private else "Saved on this computer")
            return f"{conv.title}\nLast change: {_age(conv.updated_at)}\n{where}"
        if role == CONVERSATION_ROLE:
            return conv
        if role == KEY_ROLE:
            return conv.key
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsEditable if index.isValid() else base

    def setData(self, index: _Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.EditRole or not index.isValid():
            return False
        title = " ".join(str(value).split())
        if not title:
            return False
        conv = self._items[index.row()]
        if title == conv.title:
            return True
        if self._renamer is not None:
            self._renamer(conv, title)
        else:
            conv.title = title
        self.dataChanged.emit(index, index)
        return True

    # -- contents ---------------------------------------------------------------

    def set_conversations(self, conversations: list[Conversation]) -> None:
        self.beginResetModel()
        self._items = list(conversations)
        self.endResetModel()

    def conversations(self) -> list[Conversation]:
        return list(self._items)

    def conversation_at(self, row: int) -> Conversation | None:
        return self._items[row] if 0 <= row < len(self._items) else None

    def row_of(self, conv: Conversation) -> int:
        for row, item in enumerate(self._items):
            if item is conv:
                return row
        return -1

    def add(self, conv: Conversation, row: int = 0) -> None:
        row = max(0, min(row, len(self._items)))
        self.beginInsertRows(QModelIndex(), row, row)
        self._items.insert(row, conv)
        self.endInsertRows()

    def remove(self, conv: Conversation) -> int:
        row = self.row_of(conv)
        if row >= 0:
            self.beginRemoveRows(QModelIndex(), row, row)
            del self._items[row]
            self.endRemoveRows()
        return row

    def refresh(self, conv: Conversation) -> None:
        row = self.row_of(conv)
        if row >= 0:
            index = self.index(row)
            self.dataChanged.emit(index, index)

    def move_to_top(self, conv: Conversation) -> None:
        row = self.row_of(conv)
        if row > 0:
            self.beginMoveRows(QModelIndex(), row, row, QModelIndex(), 0)
            del self._items[row]
            self._items.insert(0, conv)
            self.endMoveRows()


class ConversationFilterProxy(QSortFilterProxyModel):
    """Shows conversations whose title matches, or whose key is in `extra_keys` (text matches)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._needle = ""
        self._keys: set[str] = set()

    def set_search(self, needle: str, keys: set[str]) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter() is deprecated there
            self.beginFilterChange()
            self._needle = needle.casefold().strip()
            self._keys = keys
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._needle = needle.casefold().strip()
            self._keys = keys
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        if not self._needle:
            return True
        model = self.sourceModel()
        conv = model.data(model.index(source_row, 0, source_parent), CONVERSATION_ROLE)
        if conv is None:
            return False
        return self._needle in conv.title.casefold() or conv.key in self._keys


class ConversationPanel(QWidget):
    """New / private chat buttons, search, the list, and the 'deleted — Undo' bar."""

    sig_conversation_selected = Signal(object)  # Conversation or None
    sig_new_requested = Signal(bool)  # private?
    sig_delete_requested = Signal(object)  # Conversation
    sig_undo_requested = Signal()
    sig_search_changed = Signal(str)

    def __init__(self, list_model: ConversationListModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list_model = list_model
        self.proxy = ConversationFilterProxy(self)
        self.proxy.setSourceModel(list_model)

        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.clicked.connect(lambda: self.sig_new_requested.emit(False))
        buttons = QHBoxLayout()
        buttons.addWidget(self.new_button, 1)

        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search chats (Ctrl+F)")
        self.search_edit.setClearButtonEnabled(True)
        self._search_timer = QTimer(self, singleShot=True, interval=200)
        self._search_timer.timeout.connect(lambda: self.sig_search_changed.emit(self.search_edit.text()))
        self.search_edit.textChanged.connect(lambda _t: self._search_timer.start())

        self.list_view = QListView()
        self.list_view.setModel(self.proxy)
        self.list_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list_view.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed
                                       | QAbstractItemView.EditTrigger.DoubleClicked)
        self.list_view.setUniformItemSizes(True)
        self.list_view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list_view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list_view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list_view.customContextMenuRequested.connect(self._on_list_view_context_menu_requested)
        self.list_view.selectionModel().currentChanged.connect(self._on_list_selection_current_changed)
        self.list_view.setToolTip("")

        self.empty_label = QLabel("No conversations yet.\nAsk a question to start one.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setStyleSheet("color: palette(mid); padding: 16px;")
        self.no_match_label = QLabel("No chat matches the search.")
        self.no_match_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.no_match_label.setStyleSheet("color: palette(mid); padding: 16px;")

        self.undo_bar = QWidget()
        self.undo_bar.setObjectName("undoBar")
        self.undo_bar.setStyleSheet("#undoBar { background: palette(alternate-base); border: 1px solid palette(mid);"
                                    " border-radius: 4px; }")
        self.undo_label = QLabel("Chat deleted.")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Bring the deleted chat back (Ctrl+Z)")
        self.undo_button.clicked.connect(self.sig_undo_requested)
        undo_row = QHBoxLayout(self.undo_bar)
        undo_row.setContentsMargins(8, 4, 4, 4)
        undo_row.addWidget(self.undo_label, 1)
        undo_row.addWidget(self.undo_button)
        self.undo_bar.hide()

        self.rename_action = QAction("Rename…", self)
        self.rename_action.setShortcut(QKeySequence("F2"))
        self.rename_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.rename_action.triggered.connect(self.rename_current)
        self.delete_action = QAction("Delete", self)
        self.delete_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
        self.delete_action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self.delete_action.triggered.connect(self._on_delete_action_triggered)
        self.list_view.addAction(self.rename_action)
        self.list_view.addAction(self.delete_action)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.search_edit)
        layout.addWidget(self.list_view, 1)
        layout.addWidget(self.empty_label, 1)
        layout.addWidget(self.no_match_label, 1)
        layout.addWidget(self.undo_bar)
        for signal in (list_model.rowsInserted, list_model.rowsRemoved, list_model.modelReset,
                       self.proxy.rowsInserted, self.proxy.rowsRemoved, self.proxy.modelReset,
                       self.proxy.layoutChanged):
            signal.connect(self._update_empty)
        self._update_empty()

    # -- selection --------------------------------------------------------------

    def current(self) -> Conversation | None:
        index = self.list_view.currentIndex()
        return index.data(CONVERSATION_ROLE) if index.isValid() else None

    def select(self, conv: Conversation | None) -> None:
        if conv is None:
            self.list_view.clearSelection()
            self.list_view.setCurrentIndex(QModelIndex())
            return
        row = self.list_model.row_of(conv)
        if row < 0:
            return
        index = self.proxy.mapFromSource(self.list_model.index(row))
        if index.isValid():
            self.list_view.setCurrentIndex(index)
            self.list_view.scrollTo(index)

    @Slot(QModelIndex, QModelIndex)
    def _on_list_selection_current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        self.sig_conversation_selected.emit(current.data(CONVERSATION_ROLE) if current.isValid() else None)

    def _update_empty(self, *args: object) -> None:
        has_any = self.list_model.rowCount() > 0
        shown = self.proxy.rowCount() > 0
        self.list_view.setVisible(shown)
        self.empty_label.setVisible(not has_any)
        self.no_match_label.setVisible(has_any and not shown)

    # -- actions ----------------------------------------------------------------

    @Slot()
    def rename_current(self) -> None:
        index = self.list_view.currentIndex()
        if index.isValid():
            self.list_view.edit(index)

    @Slot()
    def _on_delete_action_triggered(self) -> None:
        conv = self.current()
        if conv is not None:
            self.sig_delete_requested.emit(conv)

    def _on_list_view_context_menu_requested(self, pos) -> None:
        index = self.list_view.indexAt(pos)
        if not index.isValid():
            return
        self.list_view.setCurrentIndex(index)
        menu = QMenu(self)
        menu.addAction(self.rename_action)
        menu.addAction(self.delete_action)
        menu.popup(self.list_view.viewport().mapToGlobal(pos))

    def show_undo(self, title: str) -> None:
        self.undo_label.setText(f"Deleted “{title}”.")
        self.undo_bar.show()

    def hide_undo(self) -> None:
        self.undo_bar.hide()
