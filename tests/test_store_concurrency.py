"""Several processes writing the app database at once: no "database is locked", no lost rows.

Real processes (two benchmark-like writers, a GUI-like chat writer and a reader) open the same
fresh database file at the same moment (so they also race through the first migration) and
hammer it with short transactions through the Store API. Bounded: a few hundred writes in all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITEMS_PER_WRITER = 120
MESSAGES = 80

_PRELUDE = """
import json, os, sys, time
from pathlib import Path
db, go, role, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
while not go.exists():
    time.sleep(0.002)
from medalpaca_desktop.core.store import Store
store = Store(db)
"""

BENCH = _PRELUDE + """
run = store.ensure_eval_run(f"bench {role}", run_dir=f"/runs/{role}", model_path="tiny.gguf")
store.update_eval_run(run, status="running", pid=os.getpid(), started_at=time.time())
for i in range(n):
    store.add_eval_item(run, f"q{i}", subset="step1", question="?", answer="A", prediction="A", correct=i % 2 == 0,
                        meta={"i": i})
    if i % 10 == 0:
        store.update_eval_run(run, n_items=i + 1)
store.update_eval_run(run, status="done", n_items=n, finished_at=time.time(), pid=None)
print(json.dumps({"run": run}))
"""

GUI = _PRELUDE + """
chat = store.create_chat("concurrent")
for i in range(n):
    mid = store.add_message(chat, "user" if i % 2 == 0 else "assistant", f"message {i}")
    store.update_message(mid, f"message {i} (final)", token_count=i)
    store.list_chats()
    store.eval_runs()
print(json.dumps({"chat": chat}))
"""

READER = _PRELUDE + """
seen = 0
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    runs = store.eval_runs()
    counts = [len(store.eval_items(r["id"])) for r in runs]
    seen = max(seen, sum(counts))
    if len(runs) == 2 and all(r["status"] == "done" for r in runs):
        break
    time.sleep(0.005)
assert store.integrity_ok()
print(json.dumps({"seen": seen}))
"""


def _start(code: str, db: Path, go: Path, role: str, n: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, str(db), str(go), role, str(n)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_benchmarks_a_gui_and_a_reader_at_once(tmp_path):
    from medalpaca_desktop.core.store import SCHEMA_VERSION, Store

    db, go = tmp_path / "medalpaca.sqlite3", tmp_path / "go"
    procs = {
        "bench-a": _start(BENCH, db, go, "a", ITEMS_PER_WRITER),
        "bench-b": _start(BENCH, db, go, "b", ITEMS_PER_WRITER),
        "gui": _start(GUI, db, go, "gui", MESSAGES),
        "reader": _start(READER, db, go, "reader", 0),
    }
    time.sleep(0.5)  # every process imported and waits for the go file: they open the new file together
    go.touch()
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name} failed:\n{stderr[-3000:]}"
        assert "locked" not in stderr, stderr
        out[name] = json.loads(stdout.strip().splitlines()[-1])

    with Store(db) as store:
        assert store.schema_version == SCHEMA_VERSION and store.integrity_ok()
        runs = {r["run_dir"]: r for r in store.eval_runs()}
        assert set(runs) == {"/runs/a", "/runs/b"}
        for run in runs.values():
            items = store.eval_items(run["id"])
            assert [it["item_key"] for it in items] == [f"q{i}" for i in range(ITEMS_PER_WRITER)]
            assert run["status"] == "done" and run["n_items"] == ITEMS_PER_WRITER
        messages = store.messages(out["gui"]["chat"])
        assert [m.content for m in messages] == [f"message {i} (final)" for i in range(MESSAGES)]
    assert out["reader"]["seen"] <= 2 * ITEMS_PER_WRITER


def test_opening_another_store_never_reopens_the_database_file(tmp_path, monkeypatch):
    """A raw open + close of the database file would drop the POSIX locks of every SQLite connection this
    process already has on it (the GUI opens several stores); the file mode is narrowed without opening."""
    import os

    from medalpaca_desktop.core import paths
    from medalpaca_desktop.core.store import Store

    db = tmp_path / "app.sqlite3"
    first = Store(db)
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **kw: (opened.append(str(path)), real_open(path, *a, **kw))[1])
    os.chmod(db, 0o644)
    second = Store(db)
    assert str(db) not in opened
    assert (db.stat().st_mode & 0o777) == paths.PRIVATE_FILE_MODE
    fresh = tmp_path / "new.sqlite3"
    paths.private_file(fresh)
    assert fresh.is_file() and (fresh.stat().st_mode & 0o777) == paths.PRIVATE_FILE_MODE
    second.close()
    first.close()
