"""The JSON-lines job protocol between workers and the GUI (docs/ARCHITECTURE.md).

Each stdout line of a worker is one JSON object with `type` and `v` (protocol
version). Readers skip, and keep as log text, any line that is not a valid event
of a known version: libraries print to stdout, and one stray line must never
break a job. Unknown fields survive a round trip in `extra` so a newer worker can
add fields without breaking an older GUI.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})


@dataclass
class Event:
    """Base of every event; `type` names the subclass on the wire."""

    type: ClassVar[str] = ""
    time: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "v": PROTOCOL_VERSION}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                data[f.name] = getattr(self, f.name)
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


@dataclass
class Started(Event):
    """The job began: what it is and which process runs it."""

    type: ClassVar[str] = "started"
    job: str = ""
    pid: int = field(default_factory=os.getpid)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress(Event):
    """How far a stage is; `eta_s` is None until a rate is known."""

    type: ClassVar[str] = "progress"
    stage: str = ""
    current: float = 0.0
    total: float | None = None
    unit: str = ""
    rate: float | None = None
    eta_s: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(1.0, self.current / self.total))


@dataclass
class Metric(Event):
    """Named numbers at a step (loss, learning rate, tokens/s, accuracy)."""

    type: ClassVar[str] = "metric"
    step: int | None = None
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Token(Event):
    """A piece of generated text, streamed."""

    type: ClassVar[str] = "token"
    text: str = ""
    request_id: str | None = None


@dataclass
class Log(Event):
    type: ClassVar[str] = "log"
    level: str = "info"
    message: str = ""


@dataclass
class Warning(Event):
    type: ClassVar[str] = "warning"
    message: str = ""


@dataclass
class Checkpoint(Event):
    type: ClassVar[str] = "checkpoint"
    path: str = ""
    step: int | None = None


@dataclass
class Result(Event):
    """The job's product: a file written, scores, a finished answer."""

    type: ClassVar[str] = "result"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Error(Event):
    """One clear message for a person, plus an optional technical detail."""

    type: ClassVar[str] = "error"
    message: str = ""
    kind: str = "error"
    detail: str | None = None


@dataclass
class Done(Event):
    """Last event of a job (ok False after an error or a stop)."""

    type: ClassVar[str] = "done"
    ok: bool = True
    stopped: bool = False
    data: dict[str, Any] = field(default_factory=dict)


EVENT_CLASSES: dict[str, type[Event]] = {
    cls.type: cls for cls in (Started, Progress, Metric, Token, Log, Warning, Checkpoint, Result, Error, Done)
}


def event_from_dict(data: dict[str, Any]) -> Event | None:
    """Build an event from a decoded line; None if it is not one we understand."""
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    cls = EVENT_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None or data.get("v") not in SUPPORTED_VERSIONS:
        return None
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    kwargs = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names and k not in ("type", "v")}
    try:
        return cls(**kwargs, extra=extra)
    except TypeError:
        return None


def parse_line(line: str | bytes) -> Event | None:
    """Decode one stdout line; None for anything that is not a valid event."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return event_from_dict(data)


class LineBuffer:
    """Splits a byte stream that arrives in arbitrary chunks into whole lines."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        return [ln.decode("utf-8", errors="replace").rstrip("\r") for ln in lines]

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8", errors="replace")] if rest.strip() else []


def read_events_file(path: str | Path) -> list[Event]:
    """All events of a run's events.jsonl (a torn last line is skipped)."""
    events: list[Event] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            event = parse_line(line)
            if event is not None:
                events.append(event)
    return events


class EventWriter:
    """Writes events as lines to a stream, and optionally appends them to a file.

    Thread-safe: generation threads and the main thread may emit at once.
    """

    def __init__(self, stream: IO[str] | None, log_path: str | Path | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None

    @classmethod
    def claim_stdout(cls, log_path: str | Path | None = None) -> EventWriter:
        """Keep the real stdout for events only and send fd 1 to stderr.

        C code (llama.cpp) and Python libraries print to stdout; after this call
        anything they print lands in the log, never in the event stream.
        """
        sys.stdout.flush()
        event_fd = os.dup(1)
        os.dup2(2, 1)
        stream = os.fdopen(event_fd, "w", encoding="utf-8", buffering=1)
        return cls(stream, log_path)

    def emit(self, event: Event) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            if self._stream is not None:
                try:
                    self._stream.write(line)
                    self._stream.flush()
                except (BrokenPipeError, ValueError):  # the reader went away
                    self._stream = None
            if self._log is not None:
                try:
                    self._log.write(line)
                    self._log.flush()
                except OSError:  # a full disk: the stream still carries the event (and the disk-full error)
                    pass
        for listener in list(self._listeners):  # outside the lock: a listener may emit a warning
            listener(event)

    def listen(self, callback: Callable[[Event], None]) -> None:
        """Call `callback` with every event after it is written (how a worker's run row follows its outcome)."""
        self._listeners.append(callback)

    def write_raw(self, text: str) -> None:
        """Write non-event text to the claimed stream (a one-shot JSON answer)."""
        with self._lock:
            if self._stream is not None:
                self._stream.write(text)
                self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None
