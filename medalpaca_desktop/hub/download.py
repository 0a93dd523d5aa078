"""`medalpaca download REPO_ID`: fetch a model from the Hugging Face hub, resumably, verified.

The only code in the app that goes online, and it runs only in the worker process
the user starts (the Download dialog or a terminal). It talks to the hub through
huggingface_hub: `HfApi.model_info(files_metadata=True)` for the file list, sizes
and LFS sha256 sums, `get_hf_file_metadata` + `http_get` for each file.

Why not `hf_hub_download`: since huggingface_hub 1.x (PR #4306, issue #4196) it
writes every download to a process-unique temporary file and deletes it on
failure, so an interrupted download always restarts from zero. Here each file
goes to `<dest>/.download/<sha256>.part`, which survives a stop or a crash; the
next run sends `Range: bytes=<size>-` (`http_get(resume_size=...)`) and goes on
from there. A finished file is checked against the hub's sha256 (git blob id
for small non-LFS files) before it is moved into place; a mismatch deletes it
and fails clearly. `config.json` is moved last, so discovery never offers a
half-downloaded Hugging Face folder, and `.download/` is hidden, so it never
offers a partial GGUF either.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from medalpaca_desktop import __version__
from medalpaca_desktop.core.disk_full import DISK_FULL_KIND, disk_full_message, is_disk_full
from medalpaca_desktop.core.events import Done, Error, EventWriter, Progress, Result, Started, Warning
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.model_info import format_size
from medalpaca_desktop.core.paths import free_space, private_dir
from medalpaca_desktop.core.progress import describe_download
from medalpaca_desktop.hub import (
    MANIFEST_NAME,
    STAGING_DIR,
    dataset_folder,
    gated_advice,
    is_valid_repo_id,
    repo_folder,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
LIBRARY_NAME = "medalpaca-desktop"
#: DownloadError kinds that are the request's fault (the repo id, a revision, a pattern, gated access).
BAD_INPUT_KINDS = frozenset({"bad_input", "not_found", "gated"})
REPO_TYPES = ("model", "dataset")  # huggingface_hub's repo_type values this worker fetches

# Never useful for chatting: training state, git metadata.
SKIPPED_BY_DEFAULT = (".gitattributes", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state*.pth",
                      "trainer_state.json", "*/.gitattributes")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
CONFIG_FILES = ("config.json", "adapter_config.json")  # moved into place last: they make a folder a model
GGUF_SPLIT_RE = re.compile(r"^(?P<prefix>.+)-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
CHECKSUM_RE = re.compile(r"^[0-9a-fA-F]{40,64}$")
MAX_NAME_BYTES = 255  # one path component, as ext4, APFS and NTFS allow
MAX_PATH_BYTES = 1024
HASH_CHUNK = 4 * 1024 * 1024
DEFAULT_CHUNK_BYTES = 1024 * 1024
CHUNK_ENV = "MEDALPACA_DOWNLOAD_CHUNK_BYTES"


class DownloadError(Exception):
    """One clear sentence for a person; `kind` lets the GUI react (network, not_found, gated, disk...)."""

    def __init__(self, message: str, kind: str = "error", detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.detail = detail

    @property
    def exit_code(self) -> ExitCode:
        """Bad input when the request names something wrong; else the download failed (network, disk, checksum)."""
        if self.kind in BAD_INPUT_KINDS:
            return ExitCode.BAD_INPUT
        if self.kind == "offline":
            return ExitCode.NOT_AVAILABLE
        return ExitCode.FAILED


@dataclass
class RemoteFile:
    path: str
    size: int | None = None
    sha256: str | None = None  # LFS files: the hub's sha256 of the content
    blob_id: str | None = None  # git object id (sha1 of "blob <size>\0" + content)

    @property
    def lfs(self) -> bool:
        return self.sha256 is not None

    @property
    def checksum(self) -> str | None:
        return self.sha256 or self.blob_id


@dataclass
class RepoListing:
    repo_id: str
    revision: str
    commit: str
    files: list[RemoteFile] = field(default_factory=list)
    gated: str | bool = False
    license: str | None = None
    repo_type: str = "model"  # or "dataset" (`medalpaca download --dataset`)
    page_url: str = ""  # the repo's page on the hub
    has_token: bool = False  # an access token is set up (for gated repos)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ================================================================ hub access

def hub_endpoint() -> str:
    """HF_ENDPOINT, read at call time (tests point it at a local server)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def go_online() -> None:
    """This process was started to download: lift the app's offline switch for it alone.

    Every other worker runs with HF_HUB_OFFLINE=1; huggingface_hub reads the variable
    once at import, so the module constant is set too. Its own tqdm bars are turned
    off: progress goes out as events (or our one terminal line). Bytes reach the disk
    in 1 MiB pieces instead of its 10 MiB, so the progress moves on a slow line and a
    stop loses little (MEDALPACA_DOWNLOAD_CHUNK_BYTES overrides; tests use small ones).
    """
    os.environ["HF_HUB_OFFLINE"] = "0"
    os.environ.pop("TRANSFORMERS_OFFLINE", None)
    from huggingface_hub import constants
    from huggingface_hub.utils import disable_progress_bars

    constants.HF_HUB_OFFLINE = False
    constants.DOWNLOAD_CHUNK_SIZE = int(os.environ.get(CHUNK_ENV) or DEFAULT_CHUNK_BYTES)
    disable_progress_bars()


def _transport_errors() -> tuple[type[BaseException], ...]:
    try:
        import httpx2 as httpx  # what huggingface_hub 2.x speaks
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx  # type: ignore[no-redef]  # the same name for either package, on purpose
    return (httpx.TransportError,)


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str = "main", filename: str | None = None,
                repo_type: str = "model", folder: Path | None = None) -> Iterator[None]:
    """Turn huggingface_hub / network / disk exceptions into one DownloadError sentence.

    `folder`: where the file is being written, named when the disk is full.
    """
    from huggingface_hub import errors as hf

    what = f"{repo_id}/{filename}" if filename else repo_id
    noun = "dataset" if repo_type == "dataset" else "model"
    try:
        yield
    except DownloadError:
        raise
    except hf.GatedRepoError as exc:
        # The hub answers 401 when no token came with the request, 403 when the token's account lacks access.
        refused = exc.response is not None and exc.response.status_code == 403
        advice = gated_advice(page_url(repo_id, repo_type), has_token=refused)
        raise DownloadError(f"{repo_id} is a gated {noun}{' and the hub refused access' if refused else ''}: "
                            f"{advice}. Then download it again.", "gated", str(exc)) from None
    except hf.RepositoryNotFoundError as exc:
        raise DownloadError(
            f"No {noun} '{repo_id}' on the Hugging Face hub (or it is private): check the repo id "
            f"(org/name, as in the {noun}'s web address).", "not_found", str(exc)) from None
    except hf.RevisionNotFoundError as exc:
        raise DownloadError(f"{repo_id} has no revision '{revision}'.", "not_found", str(exc)) from None
    except hf.EntryNotFoundError as exc:
        raise DownloadError(f"The hub has no file {what} at revision '{revision}'.", "not_found", str(exc)) from None
    except hf.OfflineModeIsEnabled as exc:
        raise DownloadError("Downloads are switched off in this process (HF_HUB_OFFLINE is set).",
                            "offline", str(exc)) from None
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise DownloadError(f"The Hugging Face hub refused access to {what} (HTTP {status}): the {noun} may be "
                                "private or gated; log in with an access token (`hf auth login` or HF_TOKEN).",
                                "gated", str(exc)) from None
        raise DownloadError(f"The Hugging Face hub answered with an error for {what} (HTTP {status}); "
                            "try again later.", "http", str(exc)) from None
    except _transport_errors() as exc:
        raise DownloadError(
            f"Could not reach the Hugging Face hub ({hub_endpoint()}): check the internet connection or proxy, "
            "then try again; a partly downloaded file resumes where it stopped.",
            "network", f"{type(exc).__name__}: {exc}") from None
    except OSError as exc:
        if is_disk_full(exc):
            raise DownloadError(_disk_full_message(folder, what), DISK_FULL_KIND, str(exc)) from None
        if "Consistency check failed" in str(exc):
            raise DownloadError(f"The transfer of {what} ended early: try again, it resumes where it stopped.",
                                "network", str(exc)) from None
        raise


def _disk_full_message(folder: Path | None, what: str) -> str:
    kept = "the partly downloaded file is kept and resumes where it stopped"
    if folder is None:
        return f"The disk is full while downloading {what}: free some space and try again; {kept}."
    return disk_full_message(folder, what, kept=kept)


def _web_path(repo_id: str, repo_type: str) -> str:
    return f"datasets/{repo_id}" if repo_type == "dataset" else repo_id


def page_url(repo_id: str, repo_type: str = "model") -> str:
    """The repo's page on the hub (where a gated repo's license is accepted)."""
    return f"{hub_endpoint()}/{_web_path(repo_id, repo_type)}"


def token_configured() -> bool:
    """Whether huggingface_hub has an access token to send (HF_TOKEN or `hf auth login`); never the token."""
    from huggingface_hub import get_token

    return get_token() is not None


def list_repo(repo_id: str, revision: str = "main", token: str | None = None,
              repo_type: str = "model") -> RepoListing:
    """The repo's files with sizes and checksums, at `revision` resolved to a commit.

    `repo_type="dataset"` lists a dataset repo (`HfApi.dataset_info`, GET /api/datasets/...).
    """
    if repo_type not in REPO_TYPES:
        raise DownloadError(f"repo_type must be one of {', '.join(REPO_TYPES)}, not {repo_type!r}.", "bad_input")
    if not is_valid_repo_id(repo_id):
        example = "medalpaca/medical_meadow_medqa" if repo_type == "dataset" else "medalpaca/medalpaca-7b"
        raise DownloadError(f"'{repo_id}' is not a Hugging Face repo id: expected org/name, "
                            f"e.g. {example}.", "bad_input")
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint(), token=token, library_name=LIBRARY_NAME, library_version=__version__)
    with _hub_errors(repo_id, revision, repo_type=repo_type):
        if repo_type == "dataset":
            info = api.dataset_info(repo_id, revision=revision, files_metadata=True)
        else:
            info = api.model_info(repo_id, revision=revision, files_metadata=True)
    files = [
        RemoteFile(path=s.rfilename, size=s.size, sha256=s.lfs.sha256 if s.lfs else None, blob_id=s.blob_id)
        for s in info.siblings or []
    ]
    card = info.card_data
    license_ = getattr(card, "license", None) if card is not None else None
    return RepoListing(repo_id=repo_id, revision=revision, commit=info.sha or revision, files=files,
                       gated=info.gated or False, license=str(license_) if license_ else None,
                       repo_type=repo_type, page_url=page_url(repo_id, repo_type), has_token=token_configured())


# ================================================================ what to download

def unsafe_name(path: object) -> str | None:
    """Why a file name from the hub's listing must not be written under the download folder; None if safe.

    The listing is data from a server: a name like `../../.bashrc`, `/etc/x`,
    `a\\..\\b` or one with a NUL would otherwise place a file anywhere the user
    can write, or overwrite the download's own bookkeeping.
    """
    if not isinstance(path, str) or not path:
        return "an empty name"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "a control character"
    if "\\" in path:
        return "a backslash"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "an absolute path"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "an empty, '.' or '..' path component"
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES or any(
            len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in parts):
        return "a name too long for the disk"
    if parts[0] == STAGING_DIR or path == MANIFEST_NAME:
        return "the name of the download's own bookkeeping"
    return None


def target_path(dest: Path, remote: RemoteFile) -> Path:
    """Where `remote` goes under `dest`; DownloadError when its name would leave the folder."""
    why = unsafe_name(remote.path)
    target = dest / remote.path if why is None else dest
    if why is None and not target.resolve().is_relative_to(dest.resolve()):
        why = "a folder that links outside the download folder"
    if why is not None:
        raise DownloadError(f"The hub lists a file named {remote.path!a}, which has {why}: it was not "
                            "downloaded. Tell the repo's owner; the other files are fine.", "unsafe_name")
    return target


def _matches(path: str, patterns: Sequence[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns)


def default_selection(files: Sequence[RemoteFile]) -> list[RemoteFile]:
    """What to fetch when the user names no files.

    A GGUF repo holds many quantizations of one model: take one (Q4_K_M, the usual
    balance of size and quality, else the smallest), all parts if it is split. A
    transformers repo: everything but training leftovers, and no pickle weights
    when safetensors are there.
    """
    usable = [f for f in files if not _matches(f.path, SKIPPED_BY_DEFAULT)]
    ggufs = [f for f in usable if f.path.lower().endswith(".gguf")]
    has_safetensors = any(f.path.endswith(".safetensors") for f in usable)
    if ggufs and not has_safetensors:
        pick = next((f for f in ggufs if "q4_k_m" in f.path.lower()), None)
        if pick is None:
            pick = min(ggufs, key=lambda f: (f.size or 0, f.path))
        split = GGUF_SPLIT_RE.match(pick.path)
        if split:
            return [f for f in ggufs if (m := GGUF_SPLIT_RE.match(f.path)) and m["prefix"] == split["prefix"]]
        return [pick]
    chosen = [f for f in usable if not f.path.lower().endswith(".gguf")]
    if has_safetensors:
        chosen = [f for f in chosen if not f.path.lower().endswith(PICKLE_SUFFIXES)]
    return chosen


def select_files(files: Sequence[RemoteFile], include: Sequence[str] | None,
                 repo_type: str = "model") -> list[RemoteFile]:
    """The files to fetch; a name that could write outside the download folder is never selected."""
    files = [f for f in files if unsafe_name(f.path) is None]
    if include:
        return [f for f in files if _matches(f.path, include)]
    if repo_type == "dataset":  # data files are what a dataset repo is for: all but git metadata
        return [f for f in files if not _matches(f.path, SKIPPED_BY_DEFAULT)]
    return default_selection(files)


def total_size(files: Sequence[RemoteFile]) -> int:
    return sum(f.size or 0 for f in files)


# ================================================================ progress

class ByteProgress:
    """Bytes on disk for the whole selection, speed over the last seconds, ETA.

    Emits `Progress(stage="download", unit="B")` events (and/or rewrites one
    terminal line), throttled; the speed counts only bytes fetched by this run,
    so a resumed download does not show an impossible rate. A ticker thread
    reports at least once a second, so the last burst before a stall is shown
    and a stalled transfer reads as 0 B/s instead of freezing on an old speed.
    """

    def __init__(self, total: int, events: EventWriter | None, terminal: IO[str] | None,
                 min_interval: float = 0.25, window_s: float = 5.0) -> None:
        self.total = total
        self.completed = 0  # bytes of files finished before the current one
        self.file_bytes = 0  # bytes of the current file on disk
        self.fetched = 0  # bytes received by this process
        self.label = ""
        self._events = events
        self._terminal = terminal
        self._min_interval = min_interval
        self._window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._last = 0.0
        self._lock = threading.RLock()
        self._ticking = threading.Event()
        self._ticker: threading.Thread | None = None

    def start_ticker(self, every_s: float = 1.0) -> None:
        def tick() -> None:
            while not self._ticking.wait(every_s):
                self.report(force=True)

        self._ticker = threading.Thread(target=tick, name="download-progress", daemon=True)
        self._ticker.start()

    def stop_ticker(self) -> None:
        self._ticking.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)

    @property
    def current(self) -> int:
        return self.completed + self.file_bytes

    def start_file(self, label: str, on_disk: int) -> None:
        self.label = label
        self.file_bytes = on_disk
        self.report(force=True)

    def wrote(self, count: int, file_bytes: int) -> None:
        self.fetched += count
        self.file_bytes = file_bytes
        self.report()

    def file_done(self, size: int) -> None:
        self.completed += size
        self.file_bytes = 0

    def rate(self) -> float | None:
        now = time.monotonic()
        self._samples.append((now, self.fetched))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window_s:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        if now - t0 < 0.2:
            return None
        if self.fetched == b0:
            return 0.0 if now - t0 >= 1.0 and self.fetched else None  # stalled
        return (self.fetched - b0) / (now - t0)

    def report(self, force: bool = False, stage: str = "download", current: int | None = None,
               total: int | None = None, message: str | None = None) -> None:
        with self._lock:
            self._report(force, stage, current, total, message)

    def _report(self, force: bool, stage: str, current: int | None, total: int | None,
                message: str | None) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._min_interval:
            return
        self._last = now
        if stage == "download":
            rate = self.rate()
            current, total = self.current, self.total
            eta = (total - current) / rate if rate and total else None
        else:
            rate = eta = None
        event = Progress(stage=stage, current=float(current or 0), total=float(total) if total else None, unit="B",
                         rate=rate, eta_s=eta, message=self.label if message is None else message)
        if self._events is not None:
            self._events.emit(event)
        if self._terminal is not None:
            self._terminal.write("\rDownloading " + describe_download(event) + "\x1b[K")
            self._terminal.flush()

    def end_line(self) -> None:
        self.stop_ticker()
        if self._terminal is not None:
            self._terminal.write("\n")
            self._terminal.flush()


class _CountingFile:
    """A binary file that tells the progress how much was written (http_get writes into it)."""

    def __init__(self, fh: IO[bytes], progress: ByteProgress) -> None:
        self._fh = fh
        self._progress = progress

    def write(self, data: bytes) -> int:
        written = self._fh.write(data)
        self._progress.wrote(len(data), self._fh.tell())
        return written

    def tell(self) -> int:
        return self._fh.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        result = self._fh.truncate(size)
        self._progress.file_bytes = self._fh.tell()  # the server ignored Range: starting over
        return result

    def flush(self) -> None:
        self._fh.flush()


# ================================================================ downloading

def _hash_file(path: Path, algorithm: str, progress: ByteProgress, label: str, git_blob: bool = False) -> str:
    digest = hashlib.new(algorithm)
    size = path.stat().st_size
    if git_blob:
        digest.update(f"blob {size}\0".encode())
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if size > HASH_CHUNK:
                progress.report(stage="verify", current=done, total=size, message=label)
    return digest.hexdigest()


def verify_file(path: Path, remote: RemoteFile, progress: ByteProgress) -> None:
    """Size and checksum against the hub's; on a mismatch the file is deleted and the error says so."""
    actual_size = path.stat().st_size
    problem = None
    if remote.size is not None and actual_size != remote.size:
        problem = f"has {actual_size} bytes instead of {remote.size}"
    elif remote.sha256:
        got = _hash_file(path, "sha256", progress, remote.path)
        if got != remote.sha256.lower():
            problem = f"has sha256 {got[:16]}… but the hub lists {remote.sha256[:16]}…"
    elif remote.blob_id and len(remote.blob_id) == 40:
        got = _hash_file(path, "sha1", progress, remote.path, git_blob=True)
        if got != remote.blob_id.lower():
            problem = f"has git blob id {got[:16]}… but the hub lists {remote.blob_id[:16]}…"
    if problem:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{remote.path} failed its integrity check: the downloaded file {problem}. "
                            "It was deleted and not added to your models; download it again.", "checksum")


def _part_path(staging: Path, remote: RemoteFile) -> Path:
    key = remote.checksum if CHECKSUM_RE.match(remote.checksum or "") else None  # the hub's text: hex only
    key = key or hashlib.sha1(remote.path.encode("utf-8", "surrogatepass")).hexdigest()
    return staging / f"{key}.part"


def _read_manifest(dest: Path) -> dict[str, Any]:
    try:
        data = json.loads((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_manifest(dest: Path, manifest: dict[str, Any]) -> None:
    tmp = dest / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, dest / MANIFEST_NAME)


def _already_there(dest: Path, remote: RemoteFile, manifest: dict[str, Any]) -> bool:
    """Placed by an earlier run (so verified then) and unchanged on the hub."""
    target = target_path(dest, remote)
    entry = manifest.get("files", {}).get(remote.path)
    try:
        size_ok = remote.size is None or target.stat().st_size == remote.size
    except OSError:
        return False
    return bool(size_ok and isinstance(entry, dict) and entry.get("checksum") == remote.checksum)


def _check_disk_space(dest: Path, needed: int) -> None:
    free = free_space(dest)
    if free is not None and needed > free:
        raise DownloadError(disk_full_message(dest, "the download", needed=needed), DISK_FULL_KIND)


def _fetch(listing: RepoListing, remote: RemoteFile, part: Path, progress: ByteProgress, token: str | None) -> None:
    """Download (or resume) one file into `part`."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    endpoint = hub_endpoint()
    url = hf_hub_url(listing.repo_id, remote.path, revision=listing.commit, endpoint=endpoint,
                     repo_type=None if listing.repo_type == "model" else listing.repo_type)
    headers = build_hf_headers(token=token, library_name=LIBRARY_NAME, library_version=__version__)
    with _hub_errors(listing.repo_id, listing.revision, remote.path, repo_type=listing.repo_type,
                     folder=part.parent):
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint, library_name=LIBRARY_NAME,
                                    library_version=__version__)
        expected = meta.size if meta.size is not None else remote.size
        if remote.size is not None and expected != remote.size:
            raise DownloadError(f"The hub reports two sizes for {remote.path} ({remote.size} and {expected}); "
                                "try again later.", "http")
        resume = part.stat().st_size if part.exists() else 0
        if expected is not None and resume > expected:
            part.unlink()
            resume = 0
        with open(part, "ab") as fh:
            fh.seek(0, os.SEEK_END)
            http_get(meta.location or url, _CountingFile(fh, progress), resume_size=resume, headers=headers,
                     expected_size=expected, displayed_filename=remote.path)


def download(
    repo_id: str,
    include: Sequence[str] | None = None,
    revision: str = "main",
    dest: Path | None = None,
    token: str | None = None,
    events: EventWriter | None = None,
    terminal: IO[str] | None = None,
    listing: RepoListing | None = None,
    repo_type: str = "model",
) -> dict[str, Any]:
    """Fetch the selected files into `dest`; returns a summary.

    Default `dest`: data_dir()/models/org--name, or data_dir()/datasets/org--name for
    `repo_type="dataset"` (a given `listing` brings its own repo_type).
    """
    from filelock import FileLock, Timeout

    listing = listing or list_repo(repo_id, revision, token, repo_type)
    repo_type = listing.repo_type
    selected = select_files(listing.files, include, repo_type)
    if not selected:
        wanted = ", ".join(include) if include else "the default selection"
        raise DownloadError(f"No file of {repo_id} matches {wanted}; use --list to see its files.", "bad_input")
    private = not dest  # the app's own folders are owner-only; a folder the user named keeps its mode
    if not dest:
        dest = dataset_folder(repo_id) if repo_type == "dataset" else repo_folder(repo_id)
    dest = Path(dest)
    staging = dest / STAGING_DIR
    try:
        if private:
            for folder in (dest.parent, dest, staging):
                private_dir(folder)
        else:
            staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Cannot create the download folder {dest}: {exc.strerror or exc}.", "disk") from None
    lock = FileLock(str(staging / "lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DownloadError(f"Another download into {dest} is running; wait for it or stop it first.",
                            "busy") from None
    try:
        return _download_locked(listing, selected, dest, staging, token, events, terminal)
    except OSError as exc:  # placing a finished file or writing the manifest
        if is_disk_full(exc):
            raise DownloadError(_disk_full_message(dest, listing.repo_id), DISK_FULL_KIND, str(exc)) from None
        raise
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            (staging / "lock").unlink()
            staging.rmdir()  # only when empty: partial files stay for the next run


def _download_locked(listing: RepoListing, selected: list[RemoteFile], dest: Path, staging: Path,
                     token: str | None, events: EventWriter | None, terminal: IO[str] | None) -> dict[str, Any]:
    manifest = _read_manifest(dest)
    manifest.update(repo_id=listing.repo_id, revision=listing.revision, commit=listing.commit)
    manifest.setdefault("files", {})
    todo = [f for f in selected if not _already_there(dest, f, manifest)]
    on_disk = {f.path: (_part_path(staging, f).stat().st_size if _part_path(staging, f).exists() else 0) for f in todo}
    total = total_size(selected)
    _check_disk_space(dest, sum(max(0, (f.size or 0) - on_disk[f.path]) for f in todo))

    progress = ByteProgress(total, events, terminal)
    progress.completed = total_size([f for f in selected if f not in todo])
    progress.start_ticker()
    resumed = {path: size for path, size in on_disk.items() if size}
    deferred: list[tuple[RemoteFile, Path]] = []
    try:
        for index, remote in enumerate(todo, 1):
            part = _part_path(staging, remote)
            progress.start_file(f"{remote.path} ({index}/{len(todo)})", on_disk[remote.path])
            _fetch(listing, remote, part, progress, token)
            verify_file(part, remote, progress)
            progress.file_done(remote.size or part.stat().st_size)
            if remote.path.rsplit("/", 1)[-1] in CONFIG_FILES:
                deferred.append((remote, part))
            else:
                _place(part, dest, remote, manifest)
        for remote, part in deferred:
            _place(part, dest, remote, manifest)
        progress.label = "done"
        progress.report(force=True)
    finally:
        progress.end_line()

    ggufs = [f.path for f in selected if f.path.lower().endswith(".gguf")]
    ggufs = [p for p in ggufs if not GGUF_SPLIT_RE.match(p) or "-00001-of-" in p]
    model_path = dest / ggufs[0] if ggufs and len(ggufs) == 1 else dest
    return {
        "repo_id": listing.repo_id,
        "repo_type": listing.repo_type,
        "revision": listing.revision,
        "commit": listing.commit,
        "path": str(dest),
        "model_path": str(model_path),
        "files": [f.path for f in selected],
        "bytes": total,
        "downloaded_bytes": progress.fetched,
        "resumed": resumed,
        "skipped": [f.path for f in selected if f not in todo],
        "refused": [f.path for f in listing.files if unsafe_name(f.path) is not None],
        "verified": True,
    }


def _place(part: Path, dest: Path, remote: RemoteFile, manifest: dict[str, Any]) -> None:
    target = target_path(dest, remote)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    manifest["files"][remote.path] = {"size": remote.size, "checksum": remote.checksum, "lfs": remote.lfs}
    _write_manifest(dest, manifest)


# ================================================================ the command

def _print_listing(listing: RepoListing, selected: list[RemoteFile], out: IO[str]) -> None:
    chosen = {f.path for f in selected}
    print(f"{listing.repo_id} @ {listing.revision} (commit {listing.commit[:12]})"
          + (f", license {listing.license}" if listing.license else ""), file=out)
    if listing.gated:
        url = listing.page_url or page_url(listing.repo_id, listing.repo_type)
        print(f"Gated: {gated_advice(url, listing.has_token)}.", file=out)
    width = max((len(f.path) for f in listing.files), default=10)
    for f in listing.files:
        mark = "*" if f.path in chosen else "!" if unsafe_name(f.path) else " "
        sha = f"  sha256 {f.sha256[:16]}…" if f.sha256 else ""
        name = f.path if unsafe_name(f.path) is None else ascii(f.path)  # no terminal escapes from the hub
        print(f"{mark} {name:<{width}}  {format_size(f.size) if f.size else '0 B':>9}{sha}", file=out)
    print(f"* selected: {len(selected)} file(s), {format_size(total_size(selected))} "
          f"(of {format_size(total_size(listing.files))} in the repo)", file=out)


def run_download_cli(repo_id: str, include: Sequence[str] | None, revision: str, dest: str | None,
                     list_only: bool, jsonl: bool, repo_type: str = "model") -> ExitCode:
    """`medalpaca download [--dataset]`: exit 0 done, 2 or 1 with one clear error, 130 when stopped (partial kept)."""
    from medalpaca_desktop.core.worker import TerminalWriter, Worker, run_worker

    def job(worker: Worker) -> ExitCode:
        events = worker.writer if jsonl else None
        out = sys.stdout
        go_online()
        dest_path = Path(dest).expanduser() if dest else None
        if events is not None:
            events.emit(Started(job="download", info={"repo_id": repo_id, "revision": revision, "list": list_only,
                                                      "endpoint": hub_endpoint(), "repo_type": repo_type}))
        default_dest = dataset_folder if repo_type == "dataset" else repo_folder
        try:
            listing = list_repo(repo_id, revision, repo_type=repo_type)
            selected = select_files(listing.files, include, repo_type)
            if list_only:
                if events is not None:
                    data = listing.to_dict()
                    data["selected"] = [f.path for f in selected]
                    data["selected_bytes"] = total_size(selected)
                    data["dest"] = str(dest_path or default_dest(repo_id))
                    events.emit(Result(data=data))
                    events.emit(Done(ok=True))
                else:
                    _print_listing(listing, selected, out)
                return ExitCode.OK
            terminal = sys.stderr if sys.stderr.isatty() else None  # a rewritten line only for a person
            summary = download(repo_id, include, revision, dest_path, events=events, terminal=terminal,
                               listing=listing)
        except DownloadError as exc:
            worker.emit(Error(message=exc.message, kind=exc.kind, detail=exc.detail))
            worker.emit(Done(ok=False))
            return exc.exit_code
        except KeyboardInterrupt:
            message = (f"Download stopped; the partial file is kept and the next download of this "
                       f"{'dataset' if repo_type == 'dataset' else 'model'} resumes from it.")
            if events is not None:
                events.emit(Done(ok=False, stopped=True, data={"message": message}))
            else:
                print(f"\nmedalpaca: {message}", file=sys.stderr)
            return ExitCode.STOPPED
        if summary["refused"]:
            worker.emit(Warning(message=f"{len(summary['refused'])} file(s) of {repo_id} have names that could "
                                        "write outside the download folder and were not downloaded: "
                                        + ", ".join(ascii(p) for p in summary["refused"][:5]),
                                extra={"kind": "unsafe_name"}))
        if events is not None:
            events.emit(Result(data=summary))
            events.emit(Done(ok=True, data={"path": summary["model_path"]}))
        else:
            print(f"Downloaded {repo_id} to {summary['model_path']} ({len(summary['files'])} file(s), "
                  f"{format_size(summary['bytes'])}, checksums verified).", file=out)
        return ExitCode.OK

    return run_worker(job, name="download", writer=None if jsonl else TerminalWriter("medalpaca"), interrupt=True)
