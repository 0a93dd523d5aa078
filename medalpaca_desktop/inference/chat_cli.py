"""`medalpaca chat`: one answer or an interactive chat, through the same host process the GUI uses.

The host runs as a subprocess (`python -m medalpaca_desktop.inference.host`) in
its own session, so Ctrl+C in the terminal reaches only this process, which turns
it into a `stop` request: the answer ends, the model stays loaded. Errors are one
line on stderr; the exit code (core.jobs.ExitCode) is 2 for a request the host
refused (a missing or damaged model, a bad setting) and 1 when the host failed.
"""

from __future__ import annotations

import collections
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import IO

from medalpaca_desktop.core.chat_protocol import (
    ChatMessage,
    GenerateRequest,
    LoadRequest,
    LoadSpec,
    Request,
    SamplingSettings,
    StopRequest,
)
from medalpaca_desktop.core.events import Done, Error, Event, Result, Token, parse_line
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.payloads import Loaded, Prompt, Sources, parse_payload
from medalpaca_desktop.inference.base import BAD_INPUT_KINDS


class ChatFailed(RuntimeError):
    """The host reported an error or went away; the message is one line for a person."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ChatOptions:
    spec: LoadSpec
    sampling: SamplingSettings
    template: str = "chat"
    system: str | None = None
    prompt: str | None = None
    jsonl: bool = False
    documents: list[str] = field(default_factory=list)  # collections to answer from, with citations


@dataclass
class _Answer:
    text: str = ""
    done: Done | None = None
    prompt: Prompt | None = None
    sources: Sources | None = None


class HostProcess:
    """A running host: send requests, read its events (a reader thread feeds a queue)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medalpaca_desktop.inference.host"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl+C is ours to turn into a stop request
        )
        self.events: queue.Queue[tuple[str | None, Event | None]] = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.events.put((line, parse_line(line)))
        self.events.put((None, None))  # EOF: the host ended

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr_tail.append(raw.decode("utf-8", errors="replace").rstrip())

    def send(self, request: Request) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((request.to_json() + "\n").encode("utf-8"))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise ChatFailed(self._died_message()) from None

    def next_event(self) -> tuple[str, Event | None]:
        line, event = self.events.get()
        if line is None:
            raise ChatFailed(self._died_message())
        return line, event

    def _died_message(self) -> str:
        code = self.proc.wait()
        self._stderr_reader.join(timeout=2)
        last = next((ln for ln in reversed(self.stderr_tail) if ln.strip()), "")
        return f"the chat host ended unexpectedly (exit code {code})" + (f": {last}" if last else "")

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()  # EOF: the host stops, unloads and exits
            except OSError:
                pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _request_id(event: Event) -> str | None:
    """Which request an event answers: tokens and result payloads carry it, done in data, the rest in extra."""
    if isinstance(event, Token):
        return event.request_id
    if isinstance(event, Result):
        payload = parse_payload(event.data)
        return getattr(payload, "request_id", None)
    if isinstance(event, Done):
        return event.data.get("request_id")
    return event.extra.get("request_id")


class ChatSession:
    """Load once, then answer prompts; prints text (or the raw events with --jsonl)."""

    def __init__(self, opts: ChatOptions, out: IO[str]) -> None:
        self.opts = opts
        self.out = out
        self.host = HostProcess()
        self.history: list[ChatMessage] = []

    def _echo(self, line: str) -> None:
        if self.opts.jsonl and line:
            self.out.write(line + "\n")
            self.out.flush()

    def _wait(self, request_id: str, until_done: bool, answer: _Answer | None = None) -> Event:
        """Events until this request's result (load) or done (generate); ChatFailed on its error."""
        while True:
            line, event = self.host.next_event()
            self._echo(line)
            if event is None:
                continue
            rid = _request_id(event)
            if isinstance(event, Error) and rid in (request_id, None):
                raise ChatFailed(event.message,
                                 ExitCode.BAD_INPUT if event.kind in BAD_INPUT_KINDS else ExitCode.FAILED)
            if rid != request_id:
                continue
            if isinstance(event, Token) and answer is not None:
                answer.text += event.text
                if not self.opts.jsonl:
                    self.out.write(event.text)
                    self.out.flush()
            elif isinstance(event, Result) and answer is not None:
                payload = parse_payload(event.data)
                if isinstance(payload, Prompt):
                    answer.prompt = payload
                elif isinstance(payload, Sources):
                    answer.sources = payload
            elif isinstance(event, Done) or (isinstance(event, Result) and not until_done):
                return event

    def load(self) -> Loaded:
        req = LoadRequest(spec=self.opts.spec)
        self.host.send(req)
        result = self._wait(req.id, until_done=False)
        loaded = parse_payload(result.data) if isinstance(result, Result) else None
        if not isinstance(loaded, Loaded):
            raise ChatFailed("the chat host answered the load request without saying what it loaded")
        return loaded

    def ask(self, user_text: str | None) -> _Answer:
        """One answer; Ctrl+C while it streams sends stop and waits for the (partial) answer."""
        opts = self.opts
        if opts.template == "raw":
            req = GenerateRequest(template="raw", prompt=user_text or "", sampling=opts.sampling)
        else:
            self.history.append(ChatMessage("user", user_text or ""))
            req = GenerateRequest(template=opts.template, messages=list(self.history), system=opts.system,
                                  sampling=opts.sampling, conversation_id="cli", documents=list(opts.documents))
        self.host.send(req)
        answer = _Answer()
        while True:
            try:
                done = self._wait(req.id, until_done=True, answer=answer)
                break
            except KeyboardInterrupt:
                self.host.send(StopRequest(target=req.id))
        assert isinstance(done, Done)
        answer.done = done
        if opts.template != "raw":
            self.history.append(ChatMessage("assistant", answer.text))
        if not opts.jsonl:
            self.out.write("\n")
            if answer.sources is not None:
                self.out.write(describe_sources(answer.sources, answer.text))
            self.out.flush()
        return answer

    def close(self) -> None:
        self.host.close()


def describe_sources(sources: Sources, answer: str) -> str:
    """The sources under an answer, and any citation of a number that was not sent."""
    from medalpaca_desktop.documents.grounding import Source, check_citations, unknown_citations_warning

    sent = [Source.from_dict(s) for s in sources.sources]
    if not sent:
        return f"(Nothing in {', '.join(sources.collections)} matched this question: no sources were sent.)\n"
    check = check_citations(answer, sent)
    lines = ["Sources:"]
    for s in sent:
        mark = "" if s.n in check.cited else "  (not cited)"
        lines.append(f"  [{s.n}] {s.where}{mark}")
    if check.unknown:
        lines.append(f"warning: {unknown_citations_warning(check.unknown, len(sent))}")
    return "\n".join(lines) + "\n"


def _read_line() -> str:
    """input() with its line editing at a terminal; a bare readline when piped (no prompt in the output)."""
    if sys.stdin.isatty():
        return input("> ")
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def _repl(session: ChatSession, err: IO[str]) -> None:
    err.write("Chat with the model. /exit or Ctrl+D ends it, Ctrl+C stops an answer. "
              "Answers are not medical advice.\n")
    while True:
        try:
            line = _read_line()
        except EOFError:
            err.write("\n")
            return
        except KeyboardInterrupt:
            err.write("\n")
            continue
        if line.strip() in ("/exit", "/quit"):
            return
        if not line.strip():
            continue
        session.ask(line)


def run_chat(opts: ChatOptions, out: IO[str] | None = None, err: IO[str] | None = None) -> ExitCode:
    """The whole `medalpaca chat` command; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        opts.sampling.validate()
    except ValueError as exc:
        err.write(f"medalpaca: error: {exc}\n")
        return ExitCode.BAD_INPUT
    session = ChatSession(opts, out)
    try:
        loaded = session.load()
        if not opts.jsonl:
            for note in loaded.notes:
                err.write(f"note: {note}\n")
        if opts.prompt is not None:
            session.ask(opts.prompt)
        else:
            _repl(session, err)
        return ExitCode.OK
    except ChatFailed as exc:
        err.write(f"medalpaca: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        err.write("\nmedalpaca: interrupted\n")
        return ExitCode.STOPPED
    finally:
        session.close()
