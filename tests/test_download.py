"""`medalpaca download` against a local imitation of the hub (tests/hub_server.py).

The real worker runs as a subprocess with HF_ENDPOINT pointing at 127.0.0.1: real
huggingface_hub calls, real HTTP, real Range requests; nothing leaves the machine.
"""

from __future__ import annotations

import errno
import hashlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hub_server import HubServer

from medalpaca_desktop.core.events import parse_line
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.hub import download as dl
from medalpaca_desktop.hub import repo_folder

REPO = Path(__file__).resolve().parents[1]
GGUF_REPO = "test-org/tiny-llama-GGUF"
HF_REPO = "test-org/tiny-llama"
CHUNK = 16 * 1024


@pytest.fixture
def hub(tiny_llama_dir, tiny_gguf, monkeypatch):
    server = HubServer()
    gguf = tiny_gguf.read_bytes()
    server.add_repo(GGUF_REPO, {
        tiny_gguf.name: gguf,
        "tiny-llama.bigger.gguf": gguf + b"\0" * 1000,  # another "quantization": not picked by default
        "config.json": b'{"model_type": "llama"}\n',  # as TheBloke's GGUF repos carry: not downloaded
        "README.md": b"# tiny llama GGUF\n",
    })
    server.add_folder(HF_REPO, tiny_llama_dir, extra={"training_args.bin": b"pickle" * 10})
    server.add_repo("test-org/gated", {"model.gguf": gguf}, gated=True)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as every app worker has it: the download lifts it for itself
    monkeypatch.delenv("HF_TOKEN", raising=False)  # no token unless a test sets one (HF_HOME is a fresh folder)
    monkeypatch.setenv(dl.CHUNK_ENV, str(CHUNK))
    yield server
    server.stop()


def medalpaca(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medalpaca_desktop", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def events_of(stdout: str) -> list:
    return [e for e in (parse_line(line) for line in stdout.splitlines()) if e is not None]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_list_shows_sizes_and_the_default_pick(hub, tiny_gguf):
    proc = medalpaca("download", GGUF_REPO, "--list", "--jsonl")
    assert proc.returncode == 0, proc.stderr
    result = next(e for e in events_of(proc.stdout) if e.type == "result").data
    sizes = {f["path"]: f["size"] for f in result["files"]}
    assert sizes[tiny_gguf.name] == tiny_gguf.stat().st_size
    assert sizes["README.md"] == len(b"# tiny llama GGUF\n")
    lfs = {f["path"]: f["sha256"] for f in result["files"]}
    assert lfs[tiny_gguf.name] == sha256(tiny_gguf) and lfs["README.md"] is None
    assert result["selected"] == [tiny_gguf.name]  # one GGUF, no stray config.json
    assert result["selected_bytes"] == tiny_gguf.stat().st_size
    assert not any(r.method == "GET" and "/resolve/" in r.path for r in hub.requests), "--list downloads nothing"

    text = medalpaca("download", HF_REPO, "--list")
    assert text.returncode == 0, text.stderr
    assert "model.safetensors" in text.stdout and "544.1 KB" in text.stdout
    assert "  training_args.bin" in text.stdout  # listed, not selected (no '*')
    assert "* selected: 6 file(s)" in text.stdout


def test_download_verifies_and_discovery_lists_it(hub, tiny_gguf):
    proc = medalpaca("download", GGUF_REPO, "--jsonl")
    assert proc.returncode == 0, proc.stderr
    events = events_of(proc.stdout)
    assert [e.type for e in events][0] == "started" and events[-1].type == "done" and events[-1].ok
    progress = [e for e in events if e.type == "progress" and e.stage == "download"]
    assert progress and progress[-1].current == progress[-1].total == tiny_gguf.stat().st_size
    assert all(e.unit == "B" for e in progress)
    result = next(e for e in events if e.type == "result").data
    target = repo_folder(GGUF_REPO) / tiny_gguf.name
    assert result["model_path"] == str(target) and result["verified"]
    assert sha256(target) == sha256(tiny_gguf)
    assert sorted(p.name for p in target.parent.iterdir()) == [".medalpaca-download.json", tiny_gguf.name]

    listed = medalpaca("models", "list", "--json", "--no-scan")
    models = json.loads(listed.stdout)["models"]
    found = [m for m in models if m["path"] == str(target)]
    assert found and found[0]["kind"] == "gguf" and found[0]["architecture"] == "llama"

    again = medalpaca("download", GGUF_REPO, "--jsonl")  # already there: checked, not fetched again
    assert again.returncode == 0
    assert next(e for e in events_of(again.stdout) if e.type == "result").data["skipped"] == [tiny_gguf.name]
    assert len(hub.gets(tiny_gguf.name)) == 1


def test_stopped_download_resumes_with_a_range_request(hub, tiny_llama_dir, tmp_path):
    dest = tmp_path / "dest"
    weights = tiny_llama_dir / "model.safetensors"
    hub.stall_at = 200_000  # the server sends this much of model.safetensors, then hangs
    proc = subprocess.Popen([sys.executable, "-m", "medalpaca_desktop", "download", HF_REPO, "--dest", str(dest),
                             "--jsonl"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = dest / ".download" / f"{sha256(weights)}.part"
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size >= CHUNK) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert part.exists(), "the partial file never appeared"
    proc.send_signal(signal.SIGINT)  # what PipeJob.stop() sends
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == ExitCode.STOPPED, err
    done = [e for e in events_of(out) if e.type == "done"]
    assert done and done[-1].stopped and not done[-1].ok
    kept = part.stat().st_size
    assert 0 < kept < weights.stat().st_size
    assert not (dest / "model.safetensors").exists()
    assert not (dest / "config.json").exists(), "config.json lands last, so no half model is ever offered"

    hub.reset_faults()
    again = medalpaca("download", HF_REPO, "--dest", str(dest), "--jsonl")
    assert again.returncode == 0, again.stderr
    ranges = [r.range for r in hub.range_requests("model.safetensors")]
    assert ranges == [f"bytes={kept}-"]
    result = next(e for e in events_of(again.stdout) if e.type == "result").data
    assert result["resumed"]["model.safetensors"] == kept
    assert sha256(dest / "model.safetensors") == sha256(weights)
    assert (dest / "config.json").read_bytes() == (tiny_llama_dir / "config.json").read_bytes()
    assert not (dest / ".download").exists()
    assert not (dest / "training_args.bin").exists()


def test_connection_drop_mid_file_is_resumed_in_the_same_run(hub, tiny_gguf, tmp_path):
    hub.fail_at = 50_000  # the first GET body is cut; huggingface_hub retries with Range
    proc = medalpaca("download", GGUF_REPO, "--dest", str(tmp_path / "d"), "--jsonl")
    assert proc.returncode == 0, proc.stderr
    assert hub.range_requests(tiny_gguf.name)
    assert sha256(tmp_path / "d" / tiny_gguf.name) == sha256(tiny_gguf)


def test_corrupted_file_fails_the_sha256_check_and_is_not_offered(hub, tiny_gguf, tmp_path):
    hub.corrupt.add(tiny_gguf.name)
    dest = tmp_path / "d"
    proc = medalpaca("download", GGUF_REPO, "--dest", str(dest), "--jsonl")
    assert proc.returncode == ExitCode.FAILED
    errors = [e for e in events_of(proc.stdout) if e.type == "error"]
    assert len(errors) == 1 and errors[0].kind == "checksum"
    assert "integrity check" in errors[0].message and "deleted" in errors[0].message
    assert not list(dest.rglob("*.gguf")) and not list(dest.rglob("*.part"))

    plain = medalpaca("download", GGUF_REPO, "--dest", str(dest))
    assert plain.returncode == ExitCode.FAILED
    assert plain.stderr.strip().splitlines()[-1].startswith("medalpaca: error: ")
    assert "sha256" in plain.stderr


@pytest.mark.parametrize(("repo", "kind", "words"), [
    ("test-org/no-such-model", "not_found", "No model 'test-org/no-such-model' on the Hugging Face hub"),
    ("test-org/gated", "gated", "gated model"),
    ("not a repo id", "bad_input", "not a Hugging Face repo id"),
])
def test_hub_errors_are_one_clear_line(hub, repo, kind, words):
    proc = medalpaca("download", repo)
    assert proc.returncode == ExitCode.BAD_INPUT
    assert proc.stderr.strip().count("\n") == 0 and words in proc.stderr
    assert "Traceback" not in proc.stderr
    jsonl = medalpaca("download", repo, "--jsonl")
    errors = [e for e in events_of(jsonl.stdout) if e.type == "error"]
    assert jsonl.returncode == ExitCode.BAD_INPUT and len(errors) == 1 and errors[0].kind == kind


def test_gated_repo_names_its_page_and_the_missing_step(hub, tiny_gguf, monkeypatch, tmp_path):
    page = f"{hub.url}/test-org/gated"
    listed = medalpaca("download", "test-org/gated", "--list", "--jsonl")
    data = next(e for e in events_of(listed.stdout) if e.type == "result").data
    assert data["gated"] and data["page_url"] == page and data["has_token"] is False
    text = medalpaca("download", "test-org/gated", "--list").stdout
    assert f"Gated: accept its license at {page}" in text and "hf auth login" in text

    no_token = medalpaca("download", "test-org/gated", "--dest", str(tmp_path / "a"))  # the hub answers 401
    assert no_token.returncode == ExitCode.BAD_INPUT and no_token.stderr.strip().count("\n") == 0
    assert f"accept its license at {page}" in no_token.stderr and "HF_TOKEN" in no_token.stderr

    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")  # a token, but its account has not accepted: 403
    refused = medalpaca("download", "test-org/gated", "--dest", str(tmp_path / "b"), "--jsonl")
    error = next(e for e in events_of(refused.stdout) if e.type == "error")
    assert refused.returncode == ExitCode.BAD_INPUT and error.kind == "gated"
    assert "refused access" in error.message and f"must accept the license at {page}" in error.message
    assert "hf auth login" not in error.message
    assert not list((tmp_path / "b").rglob("*.gguf"))

    hub.granted_tokens.add("hf_granted")  # the token is sent, and once granted the download goes through
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    granted = medalpaca("download", "test-org/gated", "--dest", str(tmp_path / "c"))
    assert granted.returncode == 0, granted.stderr
    assert sha256(tmp_path / "c" / "model.gguf") == sha256(tiny_gguf)


def test_unreachable_hub(monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    proc = medalpaca("download", "medalpaca/medalpaca-7b", "--list")
    assert proc.returncode == ExitCode.FAILED
    assert "Could not reach the Hugging Face hub" in proc.stderr and "Traceback" not in proc.stderr


def test_not_enough_disk_space_is_refused_before_downloading(monkeypatch, tmp_path):
    from medalpaca_desktop.core import paths as paths_mod

    monkeypatch.setattr(paths_mod.shutil, "disk_usage",
                        lambda path: SimpleNamespace(total=10**12, used=10**12, free=1000))
    with pytest.raises(dl.DownloadError) as info:
        dl._check_disk_space(tmp_path / "new" / "folder", 5_000_000_000)
    assert info.value.kind == "disk" and "Not enough disk space" in info.value.message


def test_default_selection():
    f = dl.RemoteFile
    gguf_repo = [f("a.Q2_K.gguf", 3), f("a.Q4_K_M.gguf", 5), f("a.Q8_0.gguf", 9), f("config.json", 1),
                 f("README.md", 1), f(".gitattributes", 1)]
    assert [x.path for x in dl.default_selection(gguf_repo)] == ["a.Q4_K_M.gguf"]
    split = [f("b-00001-of-00002.gguf", 5), f("b-00002-of-00002.gguf", 5), f("c.Q2_K.gguf", 20)]
    assert [x.path for x in dl.default_selection(split)] == ["b-00001-of-00002.gguf", "b-00002-of-00002.gguf"]
    hf_repo = [f("config.json", 1), f("model-00001-of-00002.safetensors", 5), f("pytorch_model.bin", 5),
               f("tokenizer.model", 1), f("training_args.bin", 1), f("optimizer.pt", 9)]
    assert [x.path for x in dl.default_selection(hf_repo)] == [
        "config.json", "model-00001-of-00002.safetensors", "tokenizer.model"]
    pickle_only = [f("config.json", 1), f("pytorch_model-00001-of-00002.bin", 5), f("optimizer.pt", 9)]
    assert [x.path for x in dl.default_selection(pickle_only)] == ["config.json", "pytorch_model-00001-of-00002.bin"]
    assert [x.path for x in dl.select_files(gguf_repo, ["*Q8_0*"])] == ["a.Q8_0.gguf"]


def test_disk_full_while_writing_is_one_clear_error():
    with pytest.raises(dl.DownloadError) as info, dl._hub_errors("org/model", filename="model.gguf"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.kind == "disk" and "disk is full" in info.value.message and "resumes" in info.value.message
