"""The chat tab's side of the inference host: one QObject around a PipeJob.

Starts `python -m medalpaca_desktop.inference.host` on demand, sends it load /
generate / stop / unload requests (core.chat_protocol) and turns the events it
answers with into typed signals. Everything runs on the main thread through
QProcess signals: nothing here blocks or touches a widget.
"""

from __future__ import annotations

import enum
import sys

from PySide6.QtCore import QObject, Signal, Slot

from medalpaca_desktop.core.chat_protocol import (
    GenerateRequest,
    LoadRequest,
    LoadSpec,
    StopRequest,
    UnloadRequest,
)
from medalpaca_desktop.core.events import Done, Error, Event, Progress, Result, Started, Token
from medalpaca_desktop.core.payloads import Generated, Loaded, Prompt, Sources, Unloaded, parse_payload
from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob

HOST_MODULE = "medalpaca_desktop.inference.host"


class HostState(str, enum.Enum):
    OFF = "off"  # no process
    STARTING = "starting"  # process started, no model asked for yet
    LOADING = "loading"
    READY = "ready"  # a model is loaded, nothing generating
    GENERATING = "generating"
    UNLOADING = "unloading"


def host_command() -> list[str]:
    return [sys.executable, "-m", HOST_MODULE]


class HostClient(QObject):
    """One host process, at most one loaded model, one generation at a time."""

    sig_state_changed = Signal(str)  # HostState value
    sig_load_progressed = Signal(object)  # core.events.Progress
    sig_model_loaded = Signal(object)  # core.payloads.Loaded
    sig_model_unloaded = Signal()
    sig_prompt_rendered = Signal(str, object)  # request id, core.payloads.Prompt
    sig_sources_retrieved = Signal(str, object)  # request id, core.payloads.Sources (a question with documents)
    sig_token_received = Signal(str, str)  # request id, text
    sig_generation_finished = Signal(str, object)  # request id, Generated (the answer's text and figures)
    sig_request_failed = Signal(str, str, str)  # request id ('' for none), error kind, message
    sig_host_died = Signal(str)  # the process ended without being asked: one sentence

    def __init__(self, parent: QObject | None = None, command: list[str] | None = None) -> None:
        super().__init__(parent)
        self._command = command or host_command()
        self.runner = PipeJob(self)
        self.runner.sig_event_received.connect(self._on_runner_event_received)
        self.runner.sig_finished.connect(self._on_runner_finished)
        self.state = HostState.OFF
        self.loaded: Loaded | None = None
        self._load_id: str | None = None
        self._load_spec: LoadSpec | None = None
        self._generate_id: str | None = None
        self._expect_exit = False
        self.last_outcome: JobOutcome | None = None

    # -- state ------------------------------------------------------------------

    def _set_state(self, state: HostState) -> None:
        if state != self.state:
            self.state = state
            self.sig_state_changed.emit(state.value)

    def is_running(self) -> bool:
        return self.runner.is_running()

    def pid(self) -> int | None:
        return self.runner.pid()

    @property
    def generating_id(self) -> str | None:
        return self._generate_id

    @property
    def loading_spec(self) -> LoadSpec | None:
        return self._load_spec if self.state == HostState.LOADING else None

    # -- requests ---------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self.runner.is_running():
            return
        self._expect_exit = False
        self.loaded = None
        self.runner.start(self._command[0], self._command[1:], accepts_requests=True)
        self._set_state(HostState.STARTING)

    def load(self, spec: LoadSpec) -> str:
        """Load `spec.model` (replacing any loaded model); returns the request id."""
        if self.state == HostState.GENERATING:
            self.stop()
        self._ensure_started()
        request = LoadRequest(spec=spec)
        self._load_id = request.id
        self._load_spec = spec
        self.loaded = None
        self._set_state(HostState.LOADING)
        self.runner.send(request.to_dict())
        return request.id

    def generate(self, request: GenerateRequest) -> bool:
        """Send one generate request; False when no model is loaded or one is running."""
        if self.state != HostState.READY or not self.runner.is_running():
            return False
        self._generate_id = request.id
        self._set_state(HostState.GENERATING)
        if not self.runner.send(request.to_dict()):
            self._generate_id = None
            self._set_state(HostState.READY)
            return False
        return True

    def stop(self) -> None:
        """Stop the answer being written (the model stays loaded)."""
        if self._generate_id is not None and self.runner.is_running():
            self.runner.send(StopRequest(target=self._generate_id).to_dict())

    def unload(self) -> None:
        """Give the model's memory back: ask the host to unload, then end it."""
        if not self.runner.is_running():
            self.loaded = None
            self._set_state(HostState.OFF)
            return
        self._expect_exit = True
        self.stop()
        self.runner.send(UnloadRequest().to_dict())
        self._set_state(HostState.UNLOADING)
        self.runner.stop(grace_s=3.0, kill_grace_s=2.0)

    def shutdown(self) -> None:
        """App closing: end the host at once."""
        self._expect_exit = True
        self.runner.kill_now()

    # -- events -----------------------------------------------------------------

    @Slot(object)
    def _on_runner_event_received(self, event: Event) -> None:
        if isinstance(event, Token):
            request_id = event.request_id or self._generate_id or ""
            self.sig_token_received.emit(request_id, event.text)
        elif isinstance(event, Progress):
            if self.state == HostState.LOADING:
                self.sig_load_progressed.emit(event)
        elif isinstance(event, Result):
            self._on_result(event)
        elif isinstance(event, Done):
            self._on_done(event)
        elif isinstance(event, Error):
            self._on_error(event)
        elif isinstance(event, Started):
            pass

    def _on_result(self, event: Result) -> None:
        payload = parse_payload(event.data)
        if isinstance(payload, Loaded):
            if not payload.path and self._load_spec is not None:
                payload.path = self._load_spec.model
            self.loaded = payload
            self._load_id = None
            self._set_state(HostState.READY)
            self.sig_model_loaded.emit(self.loaded)
        elif isinstance(payload, Prompt):
            self.sig_prompt_rendered.emit(payload.request_id or self._generate_id or "", payload)
        elif isinstance(payload, Sources):
            self.sig_sources_retrieved.emit(payload.request_id or self._generate_id or "", payload)
        elif isinstance(payload, Unloaded):
            self.loaded = None
            self.sig_model_unloaded.emit()

    def _on_done(self, event: Done) -> None:
        payload = parse_payload(event.data)
        done = payload if isinstance(payload, Generated) else Generated(
            request_id=event.data.get("request_id") or event.extra.get("request_id"))
        request_id = str(done.request_id or "")
        if self._generate_id is None or (request_id and request_id != self._generate_id):
            return  # the end of something else (a load, an unload)
        if event.stopped and not done.stop_reason:
            done.stop_reason = "stopped"
        finished = self._generate_id
        self._generate_id = None
        if self.state == HostState.GENERATING:
            self._set_state(HostState.READY)
        self.sig_generation_finished.emit(finished, done)

    def _on_error(self, event: Error) -> None:
        request_id = str(event.extra.get("request_id") or "")
        message = event.message or "The model host reported an error."
        if self.state == HostState.LOADING and (not request_id or request_id == self._load_id):
            self._load_id = None
            self.loaded = None
            self._set_state(HostState.STARTING)
            self.sig_request_failed.emit(request_id, event.kind, message)
            return
        if self._generate_id is not None and (not request_id or request_id == self._generate_id):
            failed = self._generate_id
            self._generate_id = None
            self._set_state(HostState.READY if self.loaded else HostState.STARTING)
            self.sig_request_failed.emit(failed, event.kind, message)
            return
        self.sig_request_failed.emit(request_id, event.kind, message)

    @Slot(object)
    def _on_runner_finished(self, outcome: JobOutcome) -> None:
        self.last_outcome = outcome
        was = self.state
        expected = self._expect_exit
        self._expect_exit = False
        self._generate_id = None
        self._load_id = None
        had_model = self.loaded is not None
        self.loaded = None
        self._set_state(HostState.OFF)
        if expected:
            if had_model or was == HostState.UNLOADING:
                self.sig_model_unloaded.emit()
            return
        if was == HostState.GENERATING:
            message = "The model process stopped unexpectedly while writing the answer."
        elif was == HostState.LOADING:
            message = "The model process stopped unexpectedly while loading the model."
        else:
            message = "The model process stopped unexpectedly."
        if outcome.exit_code is None and outcome.status.value == "crashed":
            message = message[:-1] + " (it was killed or crashed)."
        self.sig_host_died.emit(message)
