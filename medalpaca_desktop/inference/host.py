"""The chat worker: `python -m medalpaca_desktop.inference.host`.

Reads requests (core.chat_protocol) as JSON lines on stdin and answers with
events (core.events) on stdout. The main thread only reads stdin, so a `stop`
is seen at once; load/generate/score/unload run one at a time on a worker
thread. Every generate and score ends with exactly one `done` (ok False after
an error or a stop) carrying the request id; every failure is one `error`
event with a `kind`, after which the host keeps serving. EOF on stdin, SIGTERM
or SIGINT ends the host cleanly (core.worker.run_worker); a `stop` request
stops the running request only.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from medalpaca_desktop.core import gguf_meta
from medalpaca_desktop.core.chat_protocol import (
    BadRequest,
    ChatMessage,
    GenerateRequest,
    LoadRequest,
    LoadSpec,
    Request,
    ScoreRequest,
    StopRequest,
    UnloadRequest,
    parse_request,
)
from medalpaca_desktop.core.events import Done, Error, EventWriter, Progress, Started, Token
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.offline import stay_offline
from medalpaca_desktop.core.payloads import Generated, Loaded, Prompt, Score, Sources, Unloaded
from medalpaca_desktop.core.prompts import (
    ModelPromptInfo,
    PromptError,
    RenderedPrompt,
    fit_to_context,
    render_prompt,
)
from medalpaca_desktop.core.worker import Worker, run_worker
from medalpaca_desktop.inference.base import Backend, InferenceError, LoadedModel, create_backend

log = logging.getLogger(__name__)

JOB_NAME = "chat-host"


def choose_backend(spec: LoadSpec) -> str:
    """auto: llama.cpp for GGUF files, transformers for folders."""
    if spec.backend != "auto":
        return spec.backend
    path = Path(spec.model).expanduser()
    if path.is_dir():
        return "hf"
    if path.suffix.lower() == ".gguf" or (path.is_file() and gguf_meta.has_gguf_magic(path)):
        return "llamacpp"
    if not path.exists():
        raise InferenceError(f"Model not found: {path}", "not_found")
    raise InferenceError(f"{path.name} is neither a .gguf file nor a Hugging Face model folder.", "unsupported")


def precheck_hf(spec: LoadSpec) -> None:
    """The model's files checked before torch is imported (core.model_check): broken, pickle, unsupported."""
    from medalpaca_desktop.core.model_check import ModelCheckError, check_model

    try:
        check_model(spec.model, allow_pickle=spec.allow_pickle)
    except ModelCheckError as exc:
        raise InferenceError(str(exc), exc.kind) from None


class _Job:
    """The request the worker is running, and whether someone asked it to stop."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.stop = threading.Event()


class Host:
    """Request loop state: one backend, one worker thread, one running job at a time."""

    def __init__(self, writer: EventWriter) -> None:
        self.writer = writer
        self.backend: Backend | None = None
        self.loaded: LoadedModel | None = None
        self._prompt_info = ModelPromptInfo()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._current: _Job | None = None
        self._cancelled: set[str] = set()
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._retriever: Any = None  # documents.retrieve.Retriever, made at the first question with documents

    # ------------------------------------------------------------ main thread

    def start(self) -> None:
        self._worker.start()

    def handle_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            request = parse_request(line)
        except BadRequest as exc:
            self.error(str(exc), "bad_request", None)
            return
        if isinstance(request, StopRequest):
            self.stop(request.target)
        else:
            self._jobs.put(_Job(request))

    def stop(self, target: str | None = None) -> None:
        """Stop the running request (or `target`, also while it waits in the queue)."""
        with self._lock:
            job = self._current
            if job is not None and target in (None, job.request.id):
                job.stop.set()
            elif target is not None:
                self._cancelled.add(target)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop what runs, drop what waits, unload, and wait for the worker."""
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        self.stop()
        self._jobs.put(None)
        self._worker.join(timeout)

    # ------------------------------------------------------------ events

    def error(self, message: str, kind: str, request_id: str | None, detail: str | None = None) -> None:
        self.writer.emit(Error(message=message, kind=kind, detail=detail, extra={"request_id": request_id}))

    # ------------------------------------------------------------ worker thread

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            with self._lock:
                if job.request.id in self._cancelled:
                    self._cancelled.discard(job.request.id)
                    job.stop.set()
                self._current = job
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._current = None
        self._unload_quietly()

    def _run(self, job: _Job) -> None:
        req = job.request
        ends_with_done = isinstance(req, (GenerateRequest, ScoreRequest))
        try:
            if isinstance(req, LoadRequest):
                self._load(req)
            elif isinstance(req, GenerateRequest):
                self._generate(req, job)
            elif isinstance(req, ScoreRequest):
                self._score(req, job)
            elif isinstance(req, UnloadRequest):
                self._unload_quietly()
                self.writer.emit(Unloaded(request_id=req.id).to_result())
            return
        except InferenceError as exc:
            if exc.kind == "stopped" and ends_with_done:
                self.writer.emit(self._done_without_answer(req, stopped=True))
                return
            self.error(str(exc), exc.kind, req.id)
        except PromptError as exc:
            self.error(str(exc), "bad_request", req.id)
        except MemoryError:
            self.error("Out of memory. Choose a smaller model or quantization, or a shorter context.", "oom", req.id)
        except Exception as exc:
            log.exception("request %s failed", req.id)
            self.error(f"Unexpected error: {type(exc).__name__}: {exc}", "internal", req.id,
                       detail=traceback.format_exc(limit=8))
        if ends_with_done:
            self.writer.emit(self._done_without_answer(req, stopped=False))

    @staticmethod
    def _done_without_answer(req: Request, *, stopped: bool) -> Done:
        """The `done` of a request that ended before its answer (an error, or a stop before it began)."""
        if isinstance(req, GenerateRequest):
            return Generated(request_id=req.id, stop_reason="stopped" if stopped else None).to_done(
                ok=False, stopped=stopped)
        return Done(ok=False, stopped=stopped, data={"request_id": req.id})

    # ------------------------------------------------------------ load / unload

    def _unload_quietly(self) -> None:
        if self.backend is not None:
            try:
                self.backend.unload()
            except Exception:
                log.exception("unload failed")
        self.backend, self.loaded, self._prompt_info = None, None, ModelPromptInfo()

    def _load(self, req: LoadRequest) -> None:
        spec = req.spec
        if not spec.model:
            raise InferenceError("No model given: a .gguf file or a Hugging Face model folder.", "bad_request")
        self._unload_quietly()  # one model per host: free the old one before reading the new one
        name = choose_backend(spec)
        if name == "hf":
            precheck_hf(spec)
        t0 = time.perf_counter()

        def progress(message: str, fraction: float | None) -> None:
            self.writer.emit(Progress(stage="load", current=fraction or 0.0,
                                      total=1.0 if fraction is not None else None,
                                      message=message, extra={"request_id": req.id}))

        progress(f"Starting the {name} engine", 0.0)
        backend = create_backend(name)
        loaded = backend.load(spec, progress)
        self.backend, self.loaded = backend, loaded
        self._prompt_info = ModelPromptInfo(chat_template=loaded.chat_template, bos_token=loaded.bos_token,
                                            eos_token=loaded.eos_token, knows_chatml=self._knows_chatml(backend))
        fallback = None if loaded.chat_template else ("chatml" if self._prompt_info.knows_chatml else "medalpaca")
        self.writer.emit(Loaded(
            request_id=req.id, path=loaded.path, backend=loaded.backend, device=loaded.device,
            context_length=loaded.context_length, quantization=loaded.quantization, dtype=loaded.dtype,
            adapter=loaded.adapter, chat_template=loaded.chat_template, bos_token=loaded.bos_token,
            eos_token=loaded.eos_token, notes=list(loaded.notes), load_s=round(time.perf_counter() - t0, 3),
            chat_fallback=fallback).to_result())

    @staticmethod
    def _knows_chatml(backend: Backend) -> bool:
        try:
            return len(backend.tokenize("<|im_start|>", add_special=False)) == 1
        except Exception:  # noqa: BLE001
            return False

    def _require(self) -> Backend:
        if self.backend is None or self.loaded is None:
            raise InferenceError("No model is loaded: send a load request first.", "not_loaded")
        return self.backend

    # ------------------------------------------------------------ generate

    def _prompt(self, req: GenerateRequest, backend: Backend) -> tuple[RenderedPrompt, list[int]]:
        """Render and tokenize, dropping the oldest turns when the conversation outgrows the context."""
        n_ctx = backend.context_length
        reserve = max(1, min(req.sampling.max_tokens, n_ctx // 4))
        cache: dict[tuple[str, bool], list[int]] = {}

        def ids_of(p: RenderedPrompt) -> list[int]:
            key = (p.text, p.add_special)
            if key not in cache:
                cache[key] = backend.tokenize(p.text, add_special=p.add_special)
            return cache[key]

        if req.template == "raw" or not req.messages:
            if req.template != "raw":
                raise PromptError("the conversation is empty: send at least one user message")
            prompt = render_prompt("raw", self._prompt_info, req.messages, req.system, req.prompt)
            ids = ids_of(prompt)
            if len(ids) >= n_ctx:
                raise InferenceError(f"The prompt has {len(ids)} tokens; the context holds {n_ctx}. Shorten it or "
                                     "load the model with a larger context.", "context_full")
            return prompt, ids
        if req.messages[-1].role != "user":
            raise PromptError("the last message must be the user's")

        def render(msgs: list[ChatMessage]) -> RenderedPrompt:
            return render_prompt(req.template, self._prompt_info, msgs, req.system)

        prompt, _n = fit_to_context(render, req.messages, lambda p: len(ids_of(p)), n_ctx - reserve)
        return prompt, ids_of(prompt)

    def _ground(self, req: GenerateRequest) -> GenerateRequest:
        """The request with its question carrying the passages retrieved from `req.documents` (Sources first)."""
        from medalpaca_desktop.core.store import Store, StoreError
        from medalpaca_desktop.documents.embed import EmbedError
        from medalpaca_desktop.documents.grounding import grounded_question, retrieval_query, sources_from
        from medalpaca_desktop.documents.library import Library, LibraryError
        from medalpaca_desktop.documents.retrieve import Retriever
        from medalpaca_desktop.documents.search import query_terms

        if req.template == "raw" or not req.messages or req.messages[-1].role != "user":
            raise InferenceError("Documents can only be used with a chat or MedAlpaca template, to answer a "
                                 "question.", "bad_request")
        question = req.messages[-1].content
        query = retrieval_query([m.content for m in req.messages if m.role == "user"], query_terms)
        try:
            if self._retriever is None:
                self._retriever = Retriever(Library(Store()))
            retrieval = self._retriever.retrieve(req.documents, query, k=max(1, req.top_k))
        except (LibraryError, EmbedError, StoreError) as exc:
            raise InferenceError(str(exc), "not_found") from exc
        sources = sources_from(retrieval.passages)
        self.writer.emit(Sources(request_id=req.id, collections=retrieval.collections, query=query,
                                 sources=[s.to_dict() for s in sources], nothing_found=not sources,
                                 mode=retrieval.mode).to_result())
        text = grounded_question(question, sources, retrieval.collections)
        return dataclasses.replace(req, messages=[*req.messages[:-1], ChatMessage("user", text)])

    def _generate(self, req: GenerateRequest, job: _Job) -> None:
        backend = self._require()
        t0 = time.perf_counter()
        if req.documents:
            req = self._ground(req)
        prompt, ids = self._prompt(req, backend)
        self.writer.emit(Prompt(
            request_id=req.id, text=prompt.text, tokens=len(ids), template=prompt.template, fallback=prompt.fallback,
            dropped_messages=prompt.dropped_messages, truncated=prompt.dropped_messages > 0,
            context_length=backend.context_length, add_special=prompt.add_special).to_result())
        sampling = dataclasses.replace(req.sampling, stop=[*req.sampling.stop, *prompt.stop])
        pieces: list[str] = []
        first: list[float] = []

        def on_text(text: str) -> None:
            if not first:
                first.append(time.perf_counter())
            pieces.append(text)
            self.writer.emit(Token(text=text, request_id=req.id))

        stats = backend.generate(ids, sampling, on_text, job.stop.is_set)
        stopped = stats.stop_reason == "stopped"
        done = Generated(
            request_id=req.id, text="".join(pieces), prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            ttft_s=round(first[0] - t0, 4) if first else stats.ttft_s, tokens_per_s=stats.tokens_per_s,
            stop_reason=stats.stop_reason, reused_prefix_tokens=stats.reused_prefix_tokens,
            prompt_eval_tokens=backend.last_prompt_eval_tokens, dropped_messages=prompt.dropped_messages)
        self.writer.emit(done.to_done(ok=not stopped, stopped=stopped))

    # ------------------------------------------------------------ score

    def _score(self, req: ScoreRequest, job: _Job) -> None:
        backend = self._require()
        if not req.continuations:
            raise InferenceError("A score request needs at least one continuation.", "bad_request")
        rows = backend.score_details(req.context, req.continuations, job.stop.is_set)
        if job.stop.is_set():
            raise InferenceError("Scoring was stopped.", "stopped")
        self.writer.emit(Score(request_id=req.id, logprobs=[r.logprob for r in rows],
                               is_greedy=[r.is_greedy for r in rows], tokens=[r.tokens for r in rows]).to_result())
        self.writer.emit(Done(ok=True, data={"request_id": req.id}))


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin ends or a stop signal comes; either is the host's normal end (exit 0)."""
    stay_offline()  # the chat never goes online
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="host: %(levelname)s %(message)s")
    return run_worker(serve, name="chat host", interrupt=True)


def serve(worker: Worker) -> ExitCode:
    """Read requests from stdin; SIGINT/SIGTERM interrupt the read, stop what runs and end the host."""
    host = Host(worker.writer)
    host.start()
    worker.emit(Started(job=JOB_NAME, info={"backends": ["llamacpp", "hf"], "python": sys.version.split()[0]}))
    try:
        while True:
            line = sys.stdin.readline()
            if not line:
                break
            host.handle_line(line)
    except KeyboardInterrupt:
        pass
    finally:
        host.shutdown()
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
