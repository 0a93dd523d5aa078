"""The app's one SQLite database: chats, messages, training runs, eval runs.

WAL mode, foreign keys on, schema version in `PRAGMA user_version` with
migrations in code (qutebrowser misc/sql.py pattern). Every write is its own
short transaction (BEGIN IMMEDIATE, so a second process waits its turn within the busy
timeout instead of failing with "database is locked"), committed before the call returns,
so a crash (of the app or the machine) loses nothing already written and the file always
opens cleanly. A full disk is a StoreError saying so; the rows written before are intact.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medalpaca_desktop.core import paths
from medalpaca_desktop.core.disk_full import disk_full_message, is_disk_full
from medalpaca_desktop.core.jobs import STORED_STATUSES

# Each entry moves the schema from version i to i + 1. Never edit a released one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE chats (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL DEFAULT 'New chat',
        model_path TEXT,
        system_prompt TEXT,
        settings_json TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL,
        created_at REAL NOT NULL,
        token_count INTEGER,
        meta_json TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX messages_by_chat ON messages(chat_id, id);
    CREATE TABLE training_runs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        run_dir TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL DEFAULT 'created'
            CHECK (status IN ('created', 'running', 'stopped', 'failed', 'done')),
        method TEXT,
        base_model TEXT,
        data_json TEXT NOT NULL DEFAULT '[]',
        config_json TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        final_loss REAL,
        error TEXT,
        pid INTEGER
    );
    CREATE TABLE eval_runs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        run_dir TEXT UNIQUE,
        status TEXT NOT NULL DEFAULT 'created'
            CHECK (status IN ('created', 'running', 'stopped', 'failed', 'done')),
        model_path TEXT,
        model_label TEXT,
        scoring TEXT,
        dataset TEXT,
        config_json TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        finished_at REAL,
        accuracy REAL,
        n_items INTEGER,
        error TEXT
    );
    CREATE TABLE eval_items (
        id INTEGER PRIMARY KEY,
        eval_run_id INTEGER NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
        item_key TEXT NOT NULL,
        subset TEXT,
        question TEXT,
        answer TEXT,
        prediction TEXT,
        correct INTEGER,
        raw_output TEXT,
        latency_s REAL,
        meta_json TEXT NOT NULL DEFAULT '{}',
        UNIQUE (eval_run_id, item_key)
    );
    CREATE INDEX eval_items_by_run ON eval_items(eval_run_id, id);
    """,
    # 2: one status vocabulary (core.jobs.RunStatus) with 'crashed' (it was error='crashed: ...');
    # eval runs get the pid and start time a detached benchmark is followed by.
    """
    CREATE TABLE training_runs_new (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        run_dir TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL DEFAULT 'created'
            CHECK (status IN ('created', 'running', 'stopped', 'failed', 'crashed', 'done')),
        method TEXT,
        base_model TEXT,
        data_json TEXT NOT NULL DEFAULT '[]',
        config_json TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        final_loss REAL,
        error TEXT,
        pid INTEGER
    );
    INSERT INTO training_runs_new SELECT * FROM training_runs;
    DROP TABLE training_runs;
    ALTER TABLE training_runs_new RENAME TO training_runs;
    CREATE TABLE eval_runs_new (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        run_dir TEXT UNIQUE,
        status TEXT NOT NULL DEFAULT 'created'
            CHECK (status IN ('created', 'running', 'stopped', 'failed', 'crashed', 'done')),
        model_path TEXT,
        model_label TEXT,
        scoring TEXT,
        dataset TEXT,
        config_json TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        finished_at REAL,
        accuracy REAL,
        n_items INTEGER,
        error TEXT,
        started_at REAL,
        pid INTEGER
    );
    INSERT INTO eval_runs_new (id, name, run_dir, status, model_path, model_label, scoring, dataset, config_json,
                               created_at, finished_at, accuracy, n_items, error)
        SELECT id, name, run_dir, status, model_path, model_label, scoring, dataset, config_json,
               created_at, finished_at, accuracy, n_items, error FROM eval_runs;
    DROP TABLE eval_runs;
    ALTER TABLE eval_runs_new RENAME TO eval_runs;
    UPDATE eval_runs SET status = 'crashed', error = substr(error, 10)
        WHERE status = 'failed' AND error LIKE 'crashed: %';
    """,
    # 3: the best checkpoint of a fine-tune (best_by, its value and step, the in-loop benchmark's last score).
    """
    ALTER TABLE training_runs ADD COLUMN best_json TEXT NOT NULL DEFAULT '{}';
    """,
    # 4: document collections for grounded chat (medalpaca_desktop.documents): the folders and files a
    # collection holds, their passages with page and character offsets, the BM25 index (FTS5, its own copy
    # of the text so a row is removed explicitly with its passage; `coll` holds the token "k<collection id>"
    # so a search stays inside its collections within the index) and optional embedding vectors.
    """
    CREATE TABLE doc_collections (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        embed_model TEXT,
        created_at REAL NOT NULL,
        scanned_at REAL
    );
    CREATE TABLE doc_sources (
        collection_id INTEGER NOT NULL REFERENCES doc_collections(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        PRIMARY KEY (collection_id, path)
    );
    CREATE TABLE doc_files (
        id INTEGER PRIMARY KEY,
        collection_id INTEGER NOT NULL REFERENCES doc_collections(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime REAL NOT NULL,
        sha256 TEXT,
        status TEXT NOT NULL CHECK (status IN ('indexed', 'failed')),
        error TEXT,
        pages INTEGER NOT NULL DEFAULT 0,
        chunks INTEGER NOT NULL DEFAULT 0,
        indexed_at REAL NOT NULL,
        UNIQUE (collection_id, path)
    );
    CREATE TABLE doc_chunks (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL REFERENCES doc_files(id) ON DELETE CASCADE,
        page INTEGER,
        section TEXT,
        start INTEGER NOT NULL,
        end INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX doc_chunks_by_file ON doc_chunks(file_id);
    CREATE VIRTUAL TABLE doc_fts USING fts5(text, title, coll, tokenize = 'porter unicode61 remove_diacritics 2');
    CREATE TABLE doc_vectors (
        chunk_id INTEGER PRIMARY KEY REFERENCES doc_chunks(id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        vector BLOB NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

#: How long a write waits for another process's write to finish before giving up.
BUSY_TIMEOUT_S = 30.0

RUN_STATUSES = tuple(status.value for status in STORED_STATUSES)
MEMORY_DATABASE = ":memory:"  # a store for this session only, where the database file cannot be used


class StoreError(RuntimeError):
    """The database cannot be used; the message says why and what to do."""


@dataclass
class Chat:
    id: int
    title: str
    model_path: str | None
    system_prompt: str | None
    settings: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass
class Message:
    id: int
    chat_id: int
    role: str
    content: str
    created_at: float
    token_count: int | None
    meta: dict[str, Any]


def _json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


class Store:
    """One connection to the database; safe to share between threads (serialised)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._lock = threading.RLock()
        try:
            self.path = Path(path) if path else paths.database_path()
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a data folder that cannot be made is a database that cannot be opened
            raise StoreError(f"The database folder cannot be created ({exc}).") from exc
        if self.persistent:
            paths.private_file(self.path)  # 0600 before SQLite opens it: its -wal and -shm copy this mode
            for suffix in ("-wal", "-shm"):  # left by an older version with the default mode
                paths.private_file(self.path.with_name(self.path.name + suffix), create=False)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                         timeout=BUSY_TIMEOUT_S)
            self._conn.row_factory = sqlite3.Row
            self._set_wal()
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc):
                raise self._disk_full() from exc
            raise StoreError(
                f"The database {self.path} cannot be opened ({exc}). Move it aside to start a new one; "
                "the old file is left untouched."
            ) from exc

    def _set_wal(self) -> None:
        """WAL mode, waiting out another process that is creating or migrating the file right now.

        Why a loop: switching the journal mode needs the file to itself, and SQLite answers
        "database is locked" at once there instead of calling the busy handler.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- plumbing ---------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _disk_full(self) -> StoreError:
        return StoreError(disk_full_message(self.path.parent, f"the app database {self.path.name}",
                                            kept="everything saved before is intact"))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back if the block raises; a full disk is a StoreError."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    if self._conn.in_transaction:  # SQLITE_FULL may have rolled it back already
                        self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if self._conn.in_transaction:  # a failed COMMIT leaves the transaction open
                    self._conn.execute("ROLLBACK")
                if is_disk_full(exc):
                    raise self._disk_full() from exc
                raise

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """One read outside a transaction, for the modules that keep their own tables here (documents)."""
        return self._query(sql, params)

    @property
    def schema_version(self) -> int:
        return int(self._query("PRAGMA user_version")[0][0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The database {self.path} was written by a newer MedAlpaca Desktop (schema {version}, "
                f"this version knows {SCHEMA_VERSION}). Update the app; the file is left untouched."
            )
        if version == SCHEMA_VERSION:
            return
        # A migration may rebuild a table (SQLite cannot change a CHECK in place); with foreign keys
        # on, dropping the old eval_runs would cascade into eval_items. The switch only works
        # outside a transaction, and the keys are checked before each commit.
        self._conn.execute("PRAGMA foreign_keys=OFF")
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                with self.transaction() as conn:
                    if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= target:
                        continue  # another process (two workers starting at once) migrated meanwhile
                    for statement in MIGRATIONS[target - 1].split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    if conn.execute("PRAGMA foreign_key_check").fetchall():
                        raise sqlite3.DatabaseError(f"migration {target} broke a foreign key")
                    conn.execute(f"PRAGMA user_version = {target}")
        finally:
            self._conn.execute("PRAGMA foreign_keys=ON")

    @property
    def persistent(self) -> bool:
        """Whether what is written here outlives the app (False for the in-memory fallback)."""
        return str(self.path) != MEMORY_DATABASE

    def data_version(self) -> int:
        """Changes when another connection (another process, another tab) commits: a cheap "reload?" check."""
        return int(self._query("PRAGMA data_version")[0][0])

    def integrity_ok(self) -> bool:
        return self._query("PRAGMA integrity_check")[0][0] == "ok"

    # -- chats ------------------------------------------------------------
    def create_chat(self, title: str = "New chat", model_path: str | None = None,
                    system_prompt: str | None = None, settings: dict[str, Any] | None = None) -> int:
        now = time.time()
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO chats (title, model_path, system_prompt, settings_json, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (title, model_path, system_prompt, _json(settings), now, now))
            return int(cur.lastrowid or 0)

    def add_message(self, chat_id: int, role: str, content: str, token_count: int | None = None,
                    meta: dict[str, Any] | None = None) -> int:
        """Committed before returning: a message exists on disk the moment it exists."""
        now = time.time()
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO messages (chat_id, role, content, created_at, token_count, meta_json) "
                "VALUES (?, ?, ?, ?, ?, ?)", (chat_id, role, content, now, token_count, _json(meta)))
            conn.execute("UPDATE chats SET updated_at = ? WHERE id = ?", (now, chat_id))
            return int(cur.lastrowid or 0)

    def update_message(self, message_id: int, content: str, token_count: int | None = None,
                       meta: dict[str, Any] | None = None) -> None:
        """For an answer that streams in: saved as it grows."""
        with self.transaction() as conn:
            conn.execute("UPDATE messages SET content = ?, token_count = COALESCE(?, token_count), "
                         "meta_json = COALESCE(?, meta_json) WHERE id = ?",
                         (content, token_count, _json(meta) if meta is not None else None, message_id))

    def rename_chat(self, chat_id: int, title: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE chats SET title = ?, updated_at = ? WHERE id = ?", (title, time.time(), chat_id))

    def delete_chat(self, chat_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    def list_chats(self) -> list[Chat]:
        rows = self._query("SELECT * FROM chats ORDER BY updated_at DESC, id DESC")
        return [Chat(r["id"], r["title"], r["model_path"], r["system_prompt"], json.loads(r["settings_json"]),
                     r["created_at"], r["updated_at"]) for r in rows]

    def messages(self, chat_id: int) -> list[Message]:
        rows = self._query("SELECT * FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,))
        return [Message(r["id"], r["chat_id"], r["role"], r["content"], r["created_at"], r["token_count"],
                        json.loads(r["meta_json"])) for r in rows]

    # -- training runs ----------------------------------------------------
    def create_training_run(self, name: str, run_dir: str, method: str | None = None,
                            base_model: str | None = None, data: list[str] | None = None,
                            config: dict[str, Any] | None = None) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO training_runs (name, run_dir, method, base_model, data_json, config_json, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, run_dir, method, base_model, json.dumps(data or []), _json(config), time.time()))
            return int(cur.lastrowid or 0)

    _TRAINING_FIELDS = frozenset({"status", "started_at", "finished_at", "final_loss", "error", "pid", "name",
                                  "best_json"})

    def update_training_run(self, run_id: int, **fields: Any) -> None:
        self._update("training_runs", self._TRAINING_FIELDS, run_id, fields)

    def training_run_by_dir(self, run_dir: str) -> dict[str, Any] | None:
        """The training run of `run_dir` (resolved path, as stored), or None."""
        rows = self._query("SELECT * FROM training_runs WHERE run_dir = ?", (run_dir,))
        return dict(rows[0]) if rows else None

    def ensure_training_run(self, name: str, run_dir: str, method: str | None = None,
                            base_model: str | None = None, data: list[str] | None = None,
                            config: dict[str, Any] | None = None) -> int:
        """The id of `run_dir`'s row, created if missing: the trainer and the GUI may both call it."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO training_runs (name, run_dir, method, base_model, data_json, config_json, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, run_dir, method, base_model, json.dumps(data or []), _json(config), time.time()))
            row = conn.execute("SELECT id FROM training_runs WHERE run_dir = ?", (run_dir,)).fetchone()
            return int(row[0])

    def training_runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM training_runs ORDER BY created_at DESC, id DESC")]

    # -- eval runs --------------------------------------------------------
    def create_eval_run(self, name: str, run_dir: str | None = None, model_path: str | None = None,
                        model_label: str | None = None, scoring: str | None = None, dataset: str | None = None,
                        config: dict[str, Any] | None = None) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO eval_runs (name, run_dir, model_path, model_label, scoring, dataset, config_json, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, run_dir, model_path, model_label, scoring, dataset, _json(config), time.time()))
            return int(cur.lastrowid or 0)

    _EVAL_FIELDS = frozenset({"status", "finished_at", "accuracy", "n_items", "error", "name", "model_label",
                              "started_at", "pid"})

    def update_eval_run(self, run_id: int, **fields: Any) -> None:
        self._update("eval_runs", self._EVAL_FIELDS, run_id, fields)

    def ensure_eval_run(self, name: str, run_dir: str, model_path: str | None = None,
                        model_label: str | None = None, scoring: str | None = None, dataset: str | None = None,
                        config: dict[str, Any] | None = None) -> int:
        """The id of `run_dir`'s row, created if missing: the benchmark worker and the GUI may both call it."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO eval_runs (name, run_dir, model_path, model_label, scoring, dataset, "
                "config_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, run_dir, model_path, model_label, scoring, dataset, _json(config), time.time()))
            row = conn.execute("SELECT id FROM eval_runs WHERE run_dir = ?", (run_dir,)).fetchone()
            return int(row[0])

    def add_eval_item(self, run_id: int, item_key: str, *, subset: str | None = None, question: str | None = None,
                      answer: str | None = None, prediction: str | None = None, correct: bool | None = None,
                      raw_output: str | None = None, latency_s: float | None = None,
                      meta: dict[str, Any] | None = None) -> int:
        """One scored question; re-scoring the same key replaces it (resumed runs)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT OR REPLACE INTO eval_items (eval_run_id, item_key, subset, question, answer, prediction, "
                "correct, raw_output, latency_s, meta_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, item_key, subset, question, answer, prediction,
                 None if correct is None else int(bool(correct)), raw_output, latency_s, _json(meta)))
            return int(cur.lastrowid or 0)

    def eval_runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM eval_runs ORDER BY created_at DESC, id DESC")]

    def eval_run_by_dir(self, run_dir: str) -> dict[str, Any] | None:
        """The eval run written to `run_dir` (a resumed benchmark reuses its row)."""
        rows = self._query("SELECT * FROM eval_runs WHERE run_dir = ?", (run_dir,))
        return dict(rows[0]) if rows else None

    def delete_eval_run(self, run_id: int) -> None:
        """Forget an eval run and its items (the run folder on disk is left alone)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM eval_runs WHERE id = ?", (run_id,))

    def eval_items(self, run_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM eval_items WHERE eval_run_id = ? ORDER BY id", (run_id,))]

    # -- shared -----------------------------------------------------------
    def _update(self, table: str, allowed: frozenset[str], row_id: int, fields: dict[str, Any]) -> None:
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {table} fields: {', '.join(sorted(unknown))}")
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}")
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as conn:
            conn.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", (*fields.values(), row_id))


def open_store() -> tuple[Store, str | None]:
    """The app database, or an in-memory one for this session and why: callers always hold a Store."""
    try:
        return Store(), None
    except StoreError as exc:
        return Store(MEMORY_DATABASE), str(exc)
