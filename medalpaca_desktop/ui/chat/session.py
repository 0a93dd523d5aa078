"""The chat's state without its widgets: the conversation store, the host, the answer being written.

Nothing typed is ever lost: a question is committed to the store before it is
sent, an answer is saved as it streams (at least once a second), when it ends,
when it is stopped and when the model process dies under it. Private chats are
never written. When the database cannot be opened the session keeps its chats
in an in-memory store, so every path is the same; new chats are then private.
The tab (ui/chat/tab.py) shows what the signals here announce.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from medalpaca_desktop.core.chat_protocol import ChatMessage, GenerateRequest, LoadSpec, SamplingSettings
from medalpaca_desktop.core.model_info import ModelInfo
from medalpaca_desktop.core.payloads import Generated, Loaded, Prompt, Sources
from medalpaca_desktop.core.store import Store, open_store
from medalpaca_desktop.documents.grounding import Source, check_citations
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
from medalpaca_desktop.ui.chat.host_client import HostClient, HostState
from medalpaca_desktop.ui.chat.prompt_inspector import prompt_meta

SAVE_INTERVAL_MS = 500  # a streaming answer is written at least every second
UNDO_DELETE_MS = 10_000
NO_MODEL = "Choose a model first: add one from this computer or download one."


def one_sentence(message: str, limit: int = 300) -> str:
    """The first line of an error, short enough for a banner (never a traceback)."""
    line = next((ln.strip() for ln in str(message).splitlines() if ln.strip()), "Something went wrong.")
    if line.startswith("Traceback"):
        line = "The model process reported an internal error."
    return line if len(line) <= limit else line[: limit - 1] + "…"


def load_failure(name: str, sentence: str) -> str:
    if sentence.lower().startswith(("cannot load", "could not load", "model not found", "model folder not found")):
        return sentence
    return f"Could not load {name}: {sentence}"


@dataclass
class AnswerSettings:
    """How an answer is asked for, read from the settings panel when the question is sent."""

    template_choice: str  # as the panel shows it ("auto" or a template)
    template: str  # resolved for the model
    system: str | None
    sampling: SamplingSettings
    panel: dict[str, Any] = dataclasses.field(default_factory=dict)  # what a new chat remembers of the panel
    documents: list[str] = dataclasses.field(default_factory=list)  # collections the answer is grounded in


@dataclass
class Answer:
    """The answer being written (or waiting for its model to load)."""

    conv: Conversation
    entry: Entry
    model: ModelInfo
    settings: AnswerSettings
    request_id: str | None = None  # None while the model loads
    dirty: bool = False
    last_save: float = 0.0


class ChatSession(QObject):
    """One store, one host, at most one answer at a time."""

    sig_question_added = Signal(object)  # Conversation: its question is committed, the answer follows
    sig_answer_started = Signal(object, object)  # Conversation, Entry (the new assistant entry)
    sig_answer_text = Signal(object, object)  # Conversation, Entry: more text streamed
    sig_answer_changed = Signal(object, object)  # Conversation, Entry: its meta changed (the prompt arrived)
    sig_answer_finished = Signal(object, object)  # Conversation, Entry: done, stopped, failed or interrupted
    sig_error = Signal(str, bool)  # one sentence for a person, whether to offer reloading the model
    sig_error_cleared = Signal()
    sig_notice = Signal(str)  # a passing remark for the status line
    sig_status_changed = Signal()  # status_text() may read differently now
    sig_delete_pending = Signal(object)  # Conversation hidden; it can be restored until sig_delete_settled
    sig_delete_settled = Signal()

    def __init__(self, store: Store | None = None, settings_store: Any = None,
                 host_command: list[str] | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._settings_store = settings_store
        self.store_error: str | None = None
        self._owns_store = store is None
        if store is None:
            store, self.store_error = open_store()  # in memory for this session when the file cannot be used
        self.store = store
        self.conv_store = ConversationStore(store)
        self.host = HostClient(self, command=host_command)
        self._private_counter = itertools.count(1)
        self._answer: Answer | None = None
        self._requested: ModelInfo | None = None  # the model last asked to load
        self.pending_delete: tuple[Conversation, int] | None = None

        self._save_timer = QTimer(self, interval=SAVE_INTERVAL_MS)
        self._save_timer.timeout.connect(self._on_save_timer_timeout)
        self._undo_timer = QTimer(self, singleShot=True, interval=UNDO_DELETE_MS)
        self._undo_timer.timeout.connect(self.commit_pending_delete)

        self.host.sig_state_changed.connect(self._on_host_state_changed)
        self.host.sig_model_loaded.connect(self._on_host_model_loaded)
        self.host.sig_model_unloaded.connect(self.sig_status_changed)
        self.host.sig_prompt_rendered.connect(self._on_host_prompt_rendered)
        self.host.sig_sources_retrieved.connect(self._on_host_sources_retrieved)
        self.host.sig_token_received.connect(self._on_host_token_received)
        self.host.sig_generation_finished.connect(self._on_host_generation_finished)
        self.host.sig_request_failed.connect(self._on_host_request_failed)
        self.host.sig_host_died.connect(self._on_host_host_died)

    @property
    def persistent(self) -> bool:
        """Whether saved chats outlive the app (False: the database could not be opened)."""
        return self.store_error is None

    @property
    def answer(self) -> Answer | None:
        return self._answer

    @property
    def busy(self) -> bool:
        return self._answer is not None

    # -- models -----------------------------------------------------------------------

    def spec_for(self, model: ModelInfo) -> LoadSpec:
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
        self._requested = model
        self.sig_error_cleared.emit()
        self.host.load(self.spec_for(model))
        self.sig_status_changed.emit()

    def unload(self) -> None:
        if self._answer is not None:
            self.stop()
        self.host.unload()

    # -- conversations ------------------------------------------------------------------

    def _key(self, private: bool) -> str:
        return f"private:{next(self._private_counter)}" if private else f"new:{time.time_ns()}"

    def new_conversation(self, private: bool = False) -> Conversation:
        private = private or not self.persistent
        return Conversation(key=self._key(private), private=private)

    def set_private(self, conv: Conversation, private: bool) -> None:
        """Choose, before the first question, whether a chat is written to disk."""
        if conv.entries:
            return
        conv.private = private or not self.persistent
        conv.key = self._key(conv.private)

    def load_conversations(self) -> list[Conversation]:
        return self.conv_store.load_all()

    def open(self, conv: Conversation) -> None:
        """Read a saved chat's messages (once)."""
        self.conv_store.load_entries(conv)

    def rename(self, conv: Conversation, title: str) -> None:
        self.conv_store.rename(conv, title)

    def matching(self, conversations: list[Conversation], text: str) -> set[str]:
        """Keys of the chats whose messages contain `text` (ignoring case); the list filters titles itself."""
        needle = text.casefold().strip()
        if not needle:
            return set()
        keys: set[str] = set()
        for conv in conversations:
            if conv.loaded or conv.chat_id is None:
                texts = [e.content for e in conv.entries]
            else:
                texts = [m.content for m in self.store.messages(conv.chat_id)]
            if any(needle in t.casefold() for t in texts):
                keys.add(conv.key)
        return keys

    def delete(self, conv: Conversation, row: int) -> None:
        """Hide a chat; it is deleted for good after UNDO_DELETE_MS (or on the next delete, or on close)."""
        if self._answer is not None and self._answer.conv is conv:
            self.stop()
            self._finish_answer(STATUS_STOPPED, None)
        self.commit_pending_delete()
        self.pending_delete = (conv, row)
        self._undo_timer.start()
        self.sig_delete_pending.emit(conv)

    def undo_delete(self) -> tuple[Conversation, int] | None:
        """The chat hidden last and its row, now kept; None when there is nothing to undo."""
        pending, self.pending_delete = self.pending_delete, None
        if pending is None:
            return None
        self._undo_timer.stop()
        self.sig_delete_settled.emit()
        return pending

    @Slot()
    def commit_pending_delete(self) -> None:
        pending, self.pending_delete = self.pending_delete, None
        if pending is None:
            return
        self._undo_timer.stop()
        self.conv_store.delete(pending[0])
        self.sig_delete_settled.emit()

    # -- asking -------------------------------------------------------------------------

    def send(self, conv: Conversation, text: str, model: ModelInfo | None, settings: AnswerSettings,
             replacing: Entry | None = None) -> bool:
        """Commit the question (replacing the thread from `replacing` on), then ask; False when it cannot be sent."""
        if not text.strip() or self._answer is not None:
            return False
        if model is None:
            self.sig_error.emit(NO_MODEL, False)
            return False
        visible = conv.visible
        if replacing is not None and replacing in visible:
            self.conv_store.supersede(conv, visible[visible.index(replacing):])
        if not conv.entries:
            conv.title = title_from(text) if conv.title == DEFAULT_TITLE else conv.title
            conv.model_path = model.path
            conv.system_prompt = settings.system
            conv.settings = dict(settings.panel)
        self.conv_store.add(conv, Entry(None, "user", text))  # committed before anything is sent
        self.sig_question_added.emit(conv)
        self._start_answer(conv, model, settings)
        return True

    def regenerate(self, conv: Conversation, model: ModelInfo | None, settings: AnswerSettings,
                   entry: Entry | None = None) -> bool:
        """Answer the last question again (the old answer stays, superseded); only the last entry qualifies."""
        visible = conv.visible
        if self._answer is not None or not visible:
            return False
        last = visible[-1]
        if entry is not None and entry is not last:
            return False
        if model is None:
            self.sig_error.emit(NO_MODEL, False)
            return False
        if last.role == "assistant":
            self.conv_store.supersede(conv, [last])
        elif last.role != "user":
            return False
        self._start_answer(conv, model, settings)
        return True

    def stop(self) -> None:
        """Stop the answer being written; the text so far is kept."""
        answer = self._answer
        if answer is None:
            return
        if answer.request_id is None:  # still loading the model: nothing was asked yet
            self._finish_answer(STATUS_STOPPED, Generated(stop_reason="stopped"))
            return
        self.host.stop()

    def _start_answer(self, conv: Conversation, model: ModelInfo, settings: AnswerSettings) -> None:
        meta = {"status": STATUS_STREAMING, "model": model.path, "model_name": model.name}
        entry = Entry(None, "assistant", "", meta=meta)
        self.conv_store.add(conv, entry)
        self._answer = Answer(conv, entry, model, settings, last_save=time.monotonic())
        self.sig_answer_started.emit(conv, entry)
        spec = self.spec_for(model)
        loaded = self.host.loaded
        if (loaded is not None and loaded.path == spec.model and loaded.adapter == spec.adapter
                and self.host.state == HostState.READY):
            self._dispatch()
        else:
            loading = self.host.loading_spec
            if loading is None or (loading.model, loading.adapter) != (spec.model, spec.adapter):
                self.load_model(model)
        self.sig_status_changed.emit()

    def _dispatch(self) -> None:
        answer = self._answer
        assert answer is not None
        conv, entry, settings = answer.conv, answer.entry, answer.settings
        history = [e for e in conv.visible if e is not entry]
        messages = [ChatMessage(e.role, e.content) for e in history
                    if e.role in ("user", "system") or (e.role == "assistant" and e.content)]
        documents = list(settings.documents) if settings.template != "raw" else []
        request = GenerateRequest(messages=messages, template=settings.template, system=settings.system,
                                  sampling=settings.sampling, conversation_id=conv.key, documents=documents)
        if settings.template == "raw":
            request.prompt = next((m.content for m in reversed(messages) if m.role == "user"), "")
        entry.meta.update({"template": settings.template, "template_choice": settings.template_choice,
                           "system": settings.system, "sampling": dataclasses.asdict(settings.sampling),
                           "request_id": request.id})
        if documents:
            entry.meta["documents"] = documents
        if self.host.loaded is not None:
            entry.meta["backend"] = self.host.loaded.backend
        answer.request_id = request.id
        self.conv_store.save(conv, entry)
        if not self.host.generate(request):
            self._fail_answer("The model is not ready to answer; load it again and retry.")
            return
        self._save_timer.start()

    # -- host events --------------------------------------------------------------------

    def _answer_for(self, request_id: str) -> Answer | None:
        answer = self._answer
        if answer is None or answer.request_id is None:
            return None
        if request_id and request_id != answer.request_id:
            return None
        return answer

    @Slot(str)
    def _on_host_state_changed(self, _state: str) -> None:
        self.sig_status_changed.emit()

    @Slot(object)
    def _on_host_model_loaded(self, info: Loaded) -> None:
        self.sig_error_cleared.emit()
        answer = self._answer
        if answer is not None and answer.request_id is None:
            if answer.model.path == info.path or not info.path:
                self._dispatch()
            else:
                self.load_model(answer.model)
        self.sig_status_changed.emit()

    @Slot(str, object)
    def _on_host_prompt_rendered(self, request_id: str, prompt: Prompt) -> None:
        answer = self._answer_for(request_id)
        if answer is None:
            return
        meta = prompt_meta(prompt)
        if self.host.loaded is not None and self.host.loaded.context_length and meta.get("context_length") is None:
            meta["context_length"] = self.host.loaded.context_length
        answer.entry.meta["prompt"] = meta
        if prompt.dropped_messages:
            self.sig_notice.emit(f"The {prompt.dropped_messages} oldest messages did not fit the context window "
                                 "and were left out of the prompt.")
        self._save_now(answer)
        self.sig_answer_changed.emit(answer.conv, answer.entry)

    @Slot(str, object)
    def _on_host_sources_retrieved(self, request_id: str, sources: Sources) -> None:
        """Keep what was sent with the answer: its citations resolve from these, whatever the index holds later."""
        answer = self._answer_for(request_id)
        if answer is None:
            return
        answer.entry.meta["sources"] = list(sources.sources)
        answer.entry.meta["retrieval"] = {"collections": list(sources.collections), "mode": sources.mode,
                                          "nothing_found": sources.nothing_found}
        self._save_now(answer)
        self.sig_answer_changed.emit(answer.conv, answer.entry)

    @Slot(str, str)
    def _on_host_token_received(self, request_id: str, text: str) -> None:
        answer = self._answer_for(request_id)
        if answer is None:
            return
        answer.entry.content += text
        answer.dirty = True
        self.sig_answer_text.emit(answer.conv, answer.entry)
        if time.monotonic() - answer.last_save >= 1.0:
            self._save_now(answer)

    def _save_now(self, answer: Answer) -> None:
        self.conv_store.save(answer.conv, answer.entry)
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
        self.sig_status_changed.emit()

    @Slot(str, object)
    def _on_host_generation_finished(self, request_id: str, done: Generated) -> None:
        if self._answer_for(request_id) is None:
            return
        status = STATUS_STOPPED if done.stop_reason == "stopped" else STATUS_DONE
        self._finish_answer(status, done)

    @Slot(str, str, str)
    def _on_host_request_failed(self, request_id: str, kind: str, message: str) -> None:
        answer = self._answer
        sentence = one_sentence(message)
        if answer is not None and (answer.request_id is None or not request_id or request_id == answer.request_id):
            if answer.request_id is None:
                self._fail_answer(load_failure(answer.model.name, sentence))
            else:
                self._fail_answer(sentence)
            return
        if self.host.state != HostState.GENERATING and kind != "not_loaded":
            if self.host.loaded is None:
                name = self._requested.name if self._requested is not None else "the model"
                self.sig_error.emit(load_failure(name, sentence), False)
            else:
                self.sig_error.emit(sentence, False)

    @Slot(str)
    def _on_host_host_died(self, message: str) -> None:
        answer = self._answer
        if answer is None:
            self.sig_error.emit(message, True)
        elif answer.request_id is None:
            self._fail_answer(message, reload=True)
        else:
            answer.entry.meta["error"] = message
            self._finish_answer(STATUS_INTERRUPTED, None)
            self.sig_error.emit(f"{message} The partial answer is kept and marked as interrupted.", True)

    def _fail_answer(self, message: str, reload: bool = False) -> None:
        answer = self._answer
        if answer is None:
            return
        answer.entry.meta["error"] = message
        self._finish_answer(STATUS_FAILED, None)
        self.sig_error.emit(message, reload)

    def _finish_answer(self, status: str, done: Generated | None) -> None:
        answer = self._answer
        if answer is None:
            return
        self._answer = None
        self._save_timer.stop()
        entry = answer.entry
        entry.meta["status"] = status
        if done is not None:
            if done.text is not None and status in (STATUS_DONE, STATUS_STOPPED):
                entry.content = done.text  # the host's own account of the answer
            if stats := done.stats():
                entry.meta["stats"] = stats
            if done.completion_tokens is not None:
                entry.token_count = done.completion_tokens
        if "sources" in entry.meta:
            sent = [Source.from_dict(s) for s in entry.meta["sources"]]
            entry.meta["citations"] = check_citations(entry.content, sent).to_dict()
        self.conv_store.save(answer.conv, entry)
        self.sig_answer_finished.emit(answer.conv, entry)
        self.sig_status_changed.emit()

    # -- status -------------------------------------------------------------------------

    def status_text(self, conv: Conversation) -> str:
        """The status line under the chat `conv` (the one shown)."""
        answer = self._answer
        loaded = self.host.loaded
        if answer is not None:
            if answer.request_id is None:
                return f"Loading {answer.model.name}…"
            return f"Writing… {len(answer.entry.content)} characters. Esc stops."
        last = next((e for e in reversed(conv.visible) if e.role == "assistant"), None)
        stats = last.meta.get("stats") if last is not None and last.status in (STATUS_DONE, STATUS_STOPPED) else None
        if stats:
            parts = []
            if stats.get("tokens_per_s"):
                parts.append(f"{float(stats['tokens_per_s']):.1f} tokens/s")
            if stats.get("ttft_s") is not None:
                parts.append(f"first token after {float(stats['ttft_s']):.2f} s")
            used = (stats.get("prompt_tokens") or 0) + (stats.get("completion_tokens") or 0)
            context = (loaded.context_length if loaded is not None else None) or (
                ((last.meta.get("prompt") if last is not None else None) or {}).get("context_length"))
            if used and context:
                share = 100 * used / context
                parts.append(f"context: {used:,} of {context:,} tokens ({share:.0f}%)")
            elif used:
                parts.append(f"context: {used:,} tokens")
            return " · ".join(parts) or "Ready."
        if self.host.state == HostState.LOADING:
            return "Loading the model…"
        if loaded is not None:
            return f"Ready: {loaded.summary()}."
        return "No model loaded. The selected model loads when you send a question."

    # -- life cycle ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """Closing: keep the answer being written, delete what was deleted, end the host."""
        answer = self._answer
        if answer is not None:
            answer.entry.meta["error"] = "The app was closed while this answer was being written."
            self._finish_answer(STATUS_INTERRUPTED, None)
        self.commit_pending_delete()
        self.host.shutdown()
        if self._owns_store:
            self.store.close()
