"""The SQLite store: schema, migrations, transactions, and crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from medalpaca_desktop.core import paths
from medalpaca_desktop.core.store import MEMORY_DATABASE, SCHEMA_VERSION, Store, StoreError, open_store


def test_new_database_has_current_schema_in_private_dir(app_home):
    with Store() as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.path == paths.database_path()
        mode = store.path.parent.stat().st_mode & 0o777
        assert mode == 0o700
        journal = store._query("PRAGMA journal_mode")[0][0]
        assert journal == "wal"
        assert store._query("PRAGMA foreign_keys")[0][0] == 1


def test_chat_round_trip_and_cascade(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        chat = store.create_chat("Dyspnoea work-up", model_path="/m/medalpaca.gguf", settings={"temperature": 0.2})
        first = store.add_message(chat, "user", "What causes orthopnoea?")
        answer = store.add_message(chat, "assistant", "")
        store.update_message(answer, "Left heart failure, among others.", token_count=9)
        msgs = store.messages(chat)
        assert [m.role for m in msgs] == ["user", "assistant"]
        assert msgs[0].id == first and msgs[1].content.startswith("Left heart") and msgs[1].token_count == 9
        assert store.list_chats()[0].settings == {"temperature": 0.2}
        store.delete_chat(chat)
        assert store.messages(chat) == []


def test_bad_role_is_refused_and_rolled_back(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        chat = store.create_chat()
        with pytest.raises(sqlite3.IntegrityError):
            store.add_message(chat, "doctor", "x")
        assert store.messages(chat) == []
        with pytest.raises(sqlite3.IntegrityError):
            store.add_message(9999, "user", "orphan")  # foreign key enforced


def test_transaction_rolls_back_on_exception(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        chat = store.create_chat()
        with pytest.raises(RuntimeError):
            with store.transaction() as conn:
                conn.execute("INSERT INTO messages (chat_id, role, content, created_at) VALUES (?, 'user', 'a', 0)",
                             (chat,))
                raise RuntimeError("boom")
        assert store.messages(chat) == []


def test_training_and_eval_runs(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        run = store.create_training_run("lora-demo", str(tmp_path / "r1"), method="lora", base_model="demo",
                                        data=["a.json"], config={"lora_r": 8})
        store.update_training_run(run, status="done", final_loss=1.25)
        row = store.training_runs()[0]
        assert (row["status"], row["final_loss"], row["method"]) == ("done", 1.25, "lora")
        with pytest.raises(ValueError):
            store.update_training_run(run, status="exploded")
        with pytest.raises(ValueError):
            store.update_training_run(run, run_dir="/elsewhere")
        ev = store.create_eval_run("step1", model_path="/m", scoring="generate", dataset="usmle")
        store.add_eval_item(ev, "step1/1", subset="step1", answer="A", prediction="B", correct=False)
        store.add_eval_item(ev, "step1/1", subset="step1", answer="A", prediction="A", correct=True)
        items = store.eval_items(ev)
        assert len(items) == 1 and items[0]["correct"] == 1


def test_newer_schema_is_refused_without_touching_file(tmp_path):
    db = tmp_path / "db.sqlite3"
    Store(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match="newer"):
        Store(db)
    assert db.read_bytes() == before


def test_not_a_database_gives_clear_error(tmp_path):
    db = tmp_path / "db.sqlite3"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot be opened"):
        Store(db)
    assert db.read_bytes().startswith(b"this is not sqlite")


def test_a_data_folder_that_cannot_be_made_is_a_store_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="folder cannot be created"):
        Store(blocker / "data" / "db.sqlite3")


def test_open_store_falls_back_to_memory_and_says_why(app_home):
    store, error = open_store()
    assert error is None and store.persistent and store.path == paths.database_path()
    store.close()
    paths.database_path().write_bytes(b"this is not sqlite" * 100)
    store, error = open_store()
    with store:
        assert error is not None and "cannot be opened" in error
        assert str(store.path) == MEMORY_DATABASE and not store.persistent
        run_id = store.create_training_run("r", "/runs/r")  # the same calls work, for this session only
        assert [r["id"] for r in store.training_runs()] == [run_id]
    assert paths.database_path().read_bytes().startswith(b"this is not sqlite")


def test_data_version_moves_only_with_other_connections_commits(tmp_path):
    db = tmp_path / "db.sqlite3"
    with Store(db) as mine, Store(db) as theirs:
        before = mine.data_version()
        mine.create_training_run("mine", "/runs/mine")
        assert mine.data_version() == before  # our own writes: we know about them
        theirs.create_training_run("theirs", "/runs/theirs")
        assert mine.data_version() != before


WRITER = textwrap.dedent("""
    import sys
    from medalpaca_desktop.core.store import Store
    store = Store(sys.argv[1])
    chat = store.create_chat("crash test")
    i = 0
    while True:
        store.add_message(chat, "user", "message %d " % i + "x" * 2000)
        print(i, flush=True)   # reported only after the commit returned
        i += 1
""")


def test_killed_writer_loses_nothing_committed(tmp_path):
    """SIGKILL a process in the middle of a stream of writes: every reported row survives."""
    db = tmp_path / "db.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    last = -1
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            last = int(line)
            if last >= 300:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert last >= 300
    with Store(db) as store:
        assert store.integrity_ok()
        chats = store.list_chats()
        assert len(chats) == 1
        contents = [m.content.split(" ")[1] for m in store.messages(chats[0].id)]
        assert len(contents) >= last + 1
        assert contents[: last + 1] == [str(i) for i in range(last + 1)]
        store.add_message(chats[0].id, "user", "still writable")


def test_version_1_database_migrates_crashed_runs_and_keeps_items(tmp_path):
    """Schema 1 stored a crash as error='crashed: ...'; schema 2 has the status, and no item is lost."""
    from medalpaca_desktop.core.store import MIGRATIONS

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    conn.execute("INSERT INTO eval_runs (id, name, run_dir, status, error, created_at) "
                 "VALUES (1, 'a', '/r/a', 'failed', 'crashed: killed by a signal', 1.0)")
    conn.execute("INSERT INTO eval_runs (id, name, run_dir, status, error, created_at) "
                 "VALUES (2, 'b', '/r/b', 'failed', 'bad questions', 2.0)")
    conn.execute("INSERT INTO eval_items (eval_run_id, item_key, correct) VALUES (1, 'q1', 1)")
    conn.execute("INSERT INTO training_runs (name, run_dir, status, created_at) VALUES ('t', '/r/t', 'done', 3.0)")
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        runs = {r["id"]: r for r in store.eval_runs()}
        assert (runs[1]["status"], runs[1]["error"]) == ("crashed", "killed by a signal")
        assert (runs[2]["status"], runs[2]["error"]) == ("failed", "bad questions")
        assert [i["item_key"] for i in store.eval_items(1)] == ["q1"]
        assert store.training_runs()[0]["status"] == "done"
        store.update_eval_run(2, status="crashed", pid=123, started_at=5.0)
        assert store._query("PRAGMA foreign_keys")[0][0] == 1
        store.delete_eval_run(1)
        assert store.eval_items(1) == []  # the cascade still holds after the rebuild


def test_ensure_training_run_is_one_row_per_folder(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        first = store.ensure_training_run("r", "/runs/r", method="lora")
        assert store.ensure_training_run("r", "/runs/r", method="full") == first
        assert len(store.training_runs()) == 1
        assert store.training_run_by_dir("/runs/r")["method"] == "lora"
        assert store.training_run_by_dir("/runs/other") is None
