"""A local imitation of the few Hugging Face hub endpoints huggingface_hub calls to download.

Read from huggingface_hub 2.x's own code (hf_api.model_info, file_download.get_hf_file_metadata,
http_get, utils._http.hf_raise_for_status):

- GET  /api/models/{org}/{name}/revision/{rev}[?blobs=True]  model info (/api/datasets/... for a
  dataset repo added with `add_dataset`, as `HfApi.dataset_info` asks): `sha` (the commit) and
  `siblings` with `rfilename`, `size`, `blobId` and, for LFS files, `lfs: {sha256, size, pointerSize}`
- HEAD /{org}/{name}/resolve/{rev}/{path}   (/datasets/{org}/{name}/resolve/... for datasets)
  X-Repo-Commit, ETag (git blob id) or, for LFS files,
  X-Linked-Etag (sha256) and X-Linked-Size, Content-Length, Accept-Ranges
- GET  same path, honouring `Range: bytes=N-` with 206 + Content-Range
- errors as the hub signals them: X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound /
  GatedRepo: 401 for a gated repo's file asked for without a token, 403 with a token whose
  account has not been granted access (`granted_tokens` holds the ones that have); the
  model info of a gated repo stays public, as on the hub

Switches for failure tests: `stall_at` (send that many bytes of a body, then hang until
`release()` or stop), `fail_at` (send that many bytes, then drop the connection), `corrupt`
(serve other bytes than the listed sha256 describes). Every request is logged in `requests`.
Runs on 127.0.0.1:0 in a daemon thread; nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".model", ".pt", ".pth", ".parquet")
API_RE = re.compile(r"^/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
RESOLVE_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
DATASET_RESOLVE_RE = re.compile(r"^/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, bytes]
    commit: str = ""
    gated: bool = False
    license: str = "apache-2.0"
    refs: tuple[str, ...] = ("main",)  # branch names it answers to, e.g. "refs/convert/parquet"

    def __post_init__(self) -> None:
        if not self.commit:
            digest = hashlib.sha1(self.repo_id.encode())
            for path in sorted(self.files):
                digest.update(path.encode() + hashlib.sha256(self.files[path]).digest())
            self.commit = digest.hexdigest()

    @staticmethod
    def is_lfs(path: str) -> bool:
        return path.lower().endswith(LFS_SUFFIXES)

    def sibling(self, path: str) -> dict:
        data = self.files[path]
        entry = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
        if self.is_lfs(path):
            entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry


@dataclass
class RequestRecord:
    method: str
    path: str
    range: str | None
    headers: dict[str, str] = field(default_factory=dict)


class HubServer:
    """Start with `start()`; `url` is the HF_ENDPOINT to give huggingface_hub."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.datasets: dict[str, HubRepo] = {}  # dataset repos: their own namespace, as on the hub
        self.requests: list[RequestRecord] = []
        self.stall_at: int | None = None
        self.fail_at: int | None = None
        self.corrupt: set[str] = set()
        self.granted_tokens: set[str] = set()  # tokens whose account accepted the gated repos' terms
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content --------------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes], gated: bool = False) -> HubRepo:
        repo = HubRepo(repo_id, dict(files), gated=gated)
        self.repos[repo_id] = repo
        return repo

    def add_dataset(self, repo_id: str, files: dict[str, bytes], gated: bool = False,
                    refs: tuple[str, ...] = ("main",)) -> HubRepo:
        """A dataset repo, served under /api/datasets/ and /datasets/.../resolve/ at the branches `refs`."""
        repo = HubRepo(repo_id, dict(files), gated=gated, refs=refs)
        self.datasets[repo_id] = repo
        return repo

    def add_folder(self, repo_id: str, folder: Path, extra: dict[str, bytes] | None = None) -> HubRepo:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        files.update(extra or {})
        return self.add_repo(repo_id, files)

    # -- switches -------------------------------------------------------------

    def release(self) -> None:
        """End a stall: the hanging response is dropped (like a connection that died)."""
        self._release.set()

    def reset_faults(self) -> None:
        self.stall_at = None
        self.fail_at = None
        self.corrupt.clear()
        self._release.set()
        self._release = threading.Event()

    def range_requests(self, path_end: str = "") -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.range and r.path.endswith(path_end)]

    def gets(self, path_end: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path.endswith(path_end)]

    # -- running --------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    server_version = "fake-hub/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
        pass

    def _record(self) -> str:
        """The request's path as sent (a revision like refs%2Fconvert%2Fparquet stays one segment)."""
        raw = urlparse(self.path).path
        with self.hub._lock:
            self.hub.requests.append(RequestRecord(self.command, unquote(raw), self.headers.get("Range"),
                                                   {k: v for k, v in self.headers.items()}))
        return raw

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _repo(self, repo_id: str, rev: str | None, dataset: bool = False) -> HubRepo | None:
        repo = (self.hub.datasets if dataset else self.hub.repos).get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if rev not in (None, repo.commit, *repo.refs):
            self._error(404, "RevisionNotFound", "Invalid rev id: " + str(rev))
            return None
        return repo

    def do_GET(self) -> None:
        path = self._record()
        api = API_RE.match(path)
        if api:
            repo = self._repo(unquote(api["repo"]), unquote(api["rev"]) if api["rev"] else None,
                              dataset=api["kind"] == "datasets")
            if repo is not None:
                self._send_json({
                    "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "private": False,
                    "gated": "manual" if repo.gated else False, "disabled": False, "tags": ["gguf"],
                    "cardData": {"license": repo.license},
                    "siblings": [repo.sibling(p) for p in sorted(repo.files)],
                })
            return
        self._resolve(path, head=False)

    def do_HEAD(self) -> None:
        self._resolve(self._record(), head=True)

    def _send_json(self, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, path: str, head: bool) -> None:
        match = DATASET_RESOLVE_RE.match(path)
        dataset = match is not None
        match = match or RESOLVE_RE.match(path)
        if not match:
            self._error(404, "EntryNotFound", "Not found")
            return
        repo = self._repo(unquote(match["repo"]), unquote(match["rev"]), dataset=dataset)
        if repo is None:
            return
        if repo.gated:
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            if not token:
                self._error(401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must have access "
                                              "to it and be authenticated to access it. Please log in.")
                return
            if token not in self.hub.granted_tokens:
                self._error(403, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you are not in "
                                              "the authorized list. Visit its page to ask for access.")
                return
        name = unquote(match["path"])
        if name not in repo.files:
            self._error(404, "EntryNotFound", f"{name} does not exist")
            return
        data = repo.files[name]
        if name in self.hub.corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = 0
        ranged = self.headers.get("Range")
        if ranged and not head:
            found = re.match(r"bytes=(\d+)-$", ranged.strip())
            if found:
                start = int(found[1])
        if start >= len(data) and start > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if repo.is_lfs(name):
            sha = hashlib.sha256(repo.files[name]).hexdigest()
            self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
        else:
            self.send_header("ETag", f'"{git_blob_id(repo.files[name])}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if head:
            return
        body = data[start:]
        cut = self.hub.stall_at if self.hub.stall_at is not None else self.hub.fail_at
        if cut is not None and not start and len(body) > cut:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            if self.hub.stall_at is not None:
                self.hub._release.wait(60)
            self.close_connection = True
            return  # the rest never comes: the client sees a short body
        self.wfile.write(body)
