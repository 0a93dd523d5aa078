"""A full disk (issue 13) for the database, a checkpoint save, an export, a benchmark's items and a
download: one clear message naming the disk, the previous good files intact, and the job resumes
or retries once space is free.

The disk is a real small filesystem (a tmpfs mounted for the test) filled to the last page by a
filler file, so the libraries meet a real ENOSPC wherever they write. Where a mount is not
permitted (no root, no CAP_SYS_ADMIN) each test patches the write call it exercises to raise
ENOSPC instead, and the free-space reading to say 0 bytes; the database uses SQLite's own
max_page_count, which gives the same SQLITE_FULL a full disk gives.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import test_bench_run
from test_bench_run import config as bench_config
from test_bench_run import medqa_ids
from test_train_run import Recorder, make_config, write_records

from medalpaca_desktop.core.disk_full import DISK_FULL_KIND
from medalpaca_desktop.core.jobs import ExitCode

tiny_long = test_bench_run.tiny_long
DISK_MB = 48


def _enospc(*_args: Any, **_kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


class SmallDisk:
    """A folder on a small filesystem that a test can fill up and free again."""

    def __init__(self, root: Path, mounted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.mounted, self._mp = root, mounted, monkeypatch
        self.full = False
        self._patches: list[tuple[Any, str, Callable[..., Any]]] = []
        self._saved: list[tuple[Any, str, Any]] = []

    def when_full(self, owner: Any, name: str, replacement: Callable[..., Any] = _enospc) -> None:
        """Without a mount: the write call `owner.name` that fails while the disk is full."""
        self._patches.append((owner, name, replacement))

    def fill(self) -> None:
        """Use up every free byte (a real filler file, or the patched calls)."""
        self.full = True
        if not self.mounted:
            for owner, name, replacement in self._patches:
                self._saved.append((owner, name, getattr(owner, name)))
                setattr(owner, name, replacement)
            from medalpaca_desktop.core import paths

            real = shutil.disk_usage
            self._saved.append((paths.shutil, "disk_usage", real))
            paths.shutil.disk_usage = lambda p: SimpleNamespace(total=1 << 30, used=1 << 30, free=0)  # type: ignore
            return
        fd = os.open(self.root / ".filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 12, 1):
                block = b"\0" * chunk
                try:
                    while True:
                        os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        assert shutil.disk_usage(self.root).free < (1 << 16)

    def free_up(self) -> None:
        self.full = False
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)
        (self.root / ".filler").unlink(missing_ok=True)

    def files(self, folder: Path | None = None) -> list[str]:
        base = folder or self.root
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.name != ".filler")


def _mount_tmpfs(root: Path) -> bool:
    if os.environ.get("MEDALPACA_TEST_DISK") == "patched":  # try the fallback on a machine that can mount
        return False
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "tmpfs", str(root)],
                          capture_output=True, text=True)
    return proc.returncode == 0


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    root = tmp_path / "small-disk"
    root.mkdir()
    mounted = _mount_tmpfs(root)
    small = SmallDisk(root, mounted, monkeypatch)
    try:
        yield small
    finally:
        small.free_up()
        if mounted:
            subprocess.run(["umount", "-l", str(root)], capture_output=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the database


def test_database_full_is_a_store_error_and_rows_stay(disk):
    from medalpaca_desktop.core.store import Store, StoreError

    db = disk.root / "medalpaca.sqlite3"
    with Store(db) as store:
        chat = store.create_chat("before the disk filled")
        for i in range(20):
            store.add_message(chat, "user", f"message {i}")
        if not disk.mounted:  # SQLite's own limit: the same SQLITE_FULL as a full disk
            pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
            store._conn.execute(f"PRAGMA max_page_count = {pages}")
        disk.fill()
        with pytest.raises(StoreError) as info:
            for i in range(200):  # the WAL may have room for a few pages: write until it has none
                store.add_message(chat, "user", "x" * 100_000 + str(i))
        message = str(info.value)
        assert "disk is full" in message and str(disk.root) in message and "intact" in message
        assert "\n" not in message and "Traceback" not in message
        assert not store._conn.in_transaction  # the failed write was rolled back, the connection usable
        assert [m.content for m in store.messages(chat)][:20] == [f"message {i}" for i in range(20)]

        disk.free_up()
        if not disk.mounted:
            store._conn.execute("PRAGMA max_page_count = 1073741823")
        store.add_message(chat, "assistant", "after space was freed")
    with Store(db) as store:  # reopened: whole, every row written before the disk filled still there
        assert store.integrity_ok()
        contents = [m.content for m in store.messages(chat)]
        assert contents[:20] == [f"message {i}" for i in range(20)] and contents[-1] == "after space was freed"


# --------------------------------------------------------------------------- a checkpoint save


@pytest.mark.slow
def test_checkpoint_save_on_a_full_disk_keeps_the_last_checkpoint_and_resumes(disk, tiny_llama_dir, tmp_path):
    import torch
    from transformers import TrainerCallback

    from trainer.run import run_job

    class FillAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 1:
                disk.fill()

    disk.when_full(torch, "save")  # without a mount: the optimizer's save is the write that fails
    data = write_records(tmp_path)
    out = disk.root / "run"
    cfg = make_config(tiny_llama_dir, out, data, max_steps=3, save_steps=1)
    rec = Recorder()
    rc = run_job(cfg, writer=rec, callbacks=[FillAfterFirstSave()])
    assert rc == ExitCode.FAILED
    errors = rec.of("error")
    assert len(errors) == 1 and errors[0].kind == DISK_FULL_KIND, errors
    message = errors[0].message
    assert "disk is full" in message and str(out) in message and "checkpoint-1 is intact" in message
    assert "--resume" in message and "\n" not in message
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-1"]  # no half-written staging folder
    assert not (out / "final").exists()
    from test_faults_kill import _checkpoint_is_whole

    _checkpoint_is_whole(ckpts / "checkpoint-1")

    disk.free_up()
    rec2 = Recorder()
    assert run_job(cfg, resume=True, writer=rec2) == ExitCode.OK
    assert rec2.of("started")[0].info["resume_from"].endswith("checkpoint-1")
    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert json.loads((ckpts / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3


# --------------------------------------------------------------------------- an export


@pytest.mark.parametrize("checked_up_front", [True, False], ids=["refused-up-front", "fails-mid-write"])
def test_export_on_a_full_disk_leaves_the_previous_file(disk, tiny_llama_dir, monkeypatch, checked_up_front):
    import gguf

    import trainer.export as export_mod
    from trainer.export import ExportConfig, ExportError, export_gguf

    out = disk.root / "tiny.gguf"
    export_gguf(ExportConfig(model=tiny_llama_dir, out=out, quant="f16"))
    before = _sha(out)
    if not checked_up_front:  # the check passed, then another program took the space
        monkeypatch.setattr(export_mod, "_check_space", lambda out, needed: None)
    disk.when_full(gguf.GGUFWriter, "write_tensor_data")
    disk.fill()
    with pytest.raises(ExportError) as info:
        export_gguf(ExportConfig(model=tiny_llama_dir, out=out, quant="f16", overwrite=True))
    message = str(info.value)
    assert info.value.kind == DISK_FULL_KIND and str(disk.root) in message
    assert "disk space" in message and "tiny.gguf is unchanged" in message and "\n" not in message
    assert _sha(out) == before and disk.files() == ["tiny.gguf"]  # no partial file beside it

    disk.free_up()
    export_gguf(ExportConfig(model=tiny_llama_dir, out=out, quant="q8_0", overwrite=True))
    assert _sha(out) != before and disk.files() == ["tiny.gguf"]


# --------------------------------------------------------------------------- a benchmark's items


@pytest.mark.slow
def test_benchmark_on_a_full_disk_keeps_its_items_and_resumes(disk, tiny_long):
    import builtins

    from bench.run import run_job

    out = disk.root / "bench"
    cfg = bench_config(tiny_long.llamacpp, out, limit=5, batch_size=1)
    real_open = builtins.open

    def open_failing_items(file, mode="r", *a, **kw):  # without a mount: the items file's append fails
        if str(file).endswith("items.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *a, **kw)

    disk.when_full(builtins, "open", open_failing_items)

    class FillAfterTwo(test_bench_run.Recorder):
        def emit(self, event):
            super().emit(event)
            if event.type == "result" and len(self.of("result")) == 2 and not disk.full:
                disk.fill()

    rec = FillAfterTwo()
    rc = run_job(cfg, writer=rec)
    disk.free_up()  # before asserting: a failed assert must not leave `open` patched
    assert rc == ExitCode.FAILED
    errors = rec.of("error")
    assert len(errors) == 1 and errors[0].kind == DISK_FULL_KIND, errors
    message = errors[0].message
    assert "disk is full" in message and str(out) in message and "--resume" in message
    from bench.results import read_items

    kept = [it["id"] for it in read_items(out)]
    assert kept[:2] == medqa_ids(2) and len(kept) <= 3  # the two scored before, at most one more torn off

    rec2 = test_bench_run.Recorder()
    assert run_job(cfg, resume=True, writer=rec2) == ExitCode.OK
    assert [it["id"] for it in read_items(out)] == medqa_ids(5)  # every question once, in order


# --------------------------------------------------------------------------- a download


def test_download_on_a_full_disk_keeps_the_partial_file_and_resumes(disk, monkeypatch):
    from hub_server import HubServer

    from medalpaca_desktop.hub import download as dl

    payload = os.urandom(3 << 20) if disk.mounted else os.urandom(600_000)
    server = HubServer()
    server.add_repo("test-org/big-GGUF", {"big.Q4_K_M.gguf": payload})
    server.start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv(dl.CHUNK_ENV, str(64 * 1024))
        from huggingface_hub import constants

        monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # as go_online() does in the download worker, undone after
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
        dest = disk.root / "big"
        written = {"n": 0}
        real_write = dl._CountingFile.write

        def write_until_full(self, data):  # without a mount: the disk "fills" after 256 KiB
            if written["n"] >= 256 * 1024:
                raise OSError(errno.ENOSPC, "No space left on device")
            written["n"] += len(data)
            return real_write(self, data)

        if disk.mounted:
            monkeypatch.setattr(dl, "_check_disk_space", lambda dest, needed: None)  # checked, then taken
            disk.fill()
            (disk.root / ".filler").unlink()  # leave ~1 MiB: less than the file needs
            with open(disk.root / ".filler", "wb") as fh:
                fh.write(b"\0" * (shutil.disk_usage(disk.root).free - (1 << 20)))
        else:
            monkeypatch.setattr(dl._CountingFile, "write", write_until_full)
        with pytest.raises(dl.DownloadError) as info:
            dl.download("test-org/big-GGUF", dest=dest)
        assert info.value.kind == DISK_FULL_KIND
        assert "disk is full" in info.value.message and "resumes" in info.value.message
        parts = list((dest / dl.STAGING_DIR).glob("*.part")) if (dest / dl.STAGING_DIR).is_dir() else []
        assert parts and 0 < parts[0].stat().st_size < len(payload)  # the bytes already fetched are kept
        assert not (dest / "big.Q4_K_M.gguf").exists()  # never taken for a finished file

        disk.free_up()
        monkeypatch.setattr(dl._CountingFile, "write", real_write)
        summary = dl.download("test-org/big-GGUF", dest=dest)
        assert _sha(dest / "big.Q4_K_M.gguf") == hashlib.sha256(payload).hexdigest()
        assert summary is not None
    finally:
        server.stop()
