"""A conversation as the chat tab holds it: saved in the store, or private (memory only).

Nothing typed is ever lost: editing a question or regenerating an answer does
not delete rows, it marks the replaced messages `superseded` in their meta and
adds new ones, so the visible thread is every message not superseded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from medalpaca_desktop.core.store import Message, Store

# meta["status"] of an assistant message
STATUS_STREAMING = "streaming"  # being written (what a crash leaves behind)
STATUS_DONE = "done"
STATUS_STOPPED = "stopped"  # the user pressed Stop
STATUS_INTERRUPTED = "interrupted"  # the model process died mid-answer
STATUS_FAILED = "failed"  # the host answered with an error

DEFAULT_TITLE = "New chat"
TITLE_CHARS = 48


@dataclass
class Entry:
    """One message in a conversation (mirrors core.store.Message)."""

    id: int | None  # database id; None in a private conversation
    role: str
    content: str
    created_at: float = field(default_factory=time.time)
    token_count: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, message: Message) -> Entry:
        return cls(message.id, message.role, message.content, message.created_at, message.token_count,
                   dict(message.meta))

    @property
    def superseded(self) -> bool:
        return bool(self.meta.get("superseded"))

    @property
    def status(self) -> str:
        return str(self.meta.get("status") or STATUS_DONE)


@dataclass
class Conversation:
    """A chat: its messages and where they are kept."""

    key: str  # "db:<id>" or "private:<n>": stable list identity
    title: str = DEFAULT_TITLE
    chat_id: int | None = None  # None until first saved (never, when private)
    private: bool = False
    entries: list[Entry] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    model_path: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    loaded: bool = True  # entries read from the store

    @property
    def visible(self) -> list[Entry]:
        return [e for e in self.entries if not e.superseded]

    @property
    def is_empty(self) -> bool:
        return not self.visible

    def touch(self) -> None:
        self.updated_at = time.time()


def title_from(text: str) -> str:
    """A chat title from its first question: first line, shortened."""
    line = " ".join(text.strip().split())
    if not line:
        return DEFAULT_TITLE
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


class ConversationStore:
    """Writes a conversation's changes through to the store unless it is private.

    Every call commits before it returns (core.store), so what the user typed is
    on disk before it is sent anywhere.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def ensure_saved(self, conv: Conversation) -> None:
        if conv.private or conv.chat_id is not None:
            return
        conv.chat_id = self.store.create_chat(conv.title, model_path=conv.model_path,
                                              system_prompt=conv.system_prompt, settings=conv.settings)
        conv.key = f"db:{conv.chat_id}"

    def add(self, conv: Conversation, entry: Entry) -> Entry:
        conv.entries.append(entry)
        conv.touch()
        if not conv.private:
            self.ensure_saved(conv)
            assert conv.chat_id is not None
            entry.id = self.store.add_message(conv.chat_id, entry.role, entry.content,
                                              token_count=entry.token_count, meta=entry.meta)
        return entry

    def save(self, conv: Conversation, entry: Entry) -> None:
        if conv.private or entry.id is None:
            return
        self.store.update_message(entry.id, entry.content, token_count=entry.token_count, meta=entry.meta)

    def supersede(self, conv: Conversation, entries: list[Entry]) -> None:
        for entry in entries:
            entry.meta["superseded"] = True
            self.save(conv, entry)

    def rename(self, conv: Conversation, title: str) -> None:
        conv.title = title
        if not conv.private and conv.chat_id is not None:
            self.store.rename_chat(conv.chat_id, title)

    def delete(self, conv: Conversation) -> None:
        if not conv.private and conv.chat_id is not None:
            self.store.delete_chat(conv.chat_id)

    def load_all(self) -> list[Conversation]:
        """Every saved chat, newest first; messages are read when a chat is opened."""
        return [Conversation(key=f"db:{c.id}", title=c.title, chat_id=c.id, settings=dict(c.settings),
                             system_prompt=c.system_prompt, model_path=c.model_path, created_at=c.created_at,
                             updated_at=c.updated_at, loaded=False)
                for c in self.store.list_chats()]

    def load_entries(self, conv: Conversation) -> None:
        if conv.loaded or conv.chat_id is None:
            conv.loaded = True
            return
        conv.entries = [Entry.from_message(m) for m in self.store.messages(conv.chat_id)]
        conv.loaded = True
