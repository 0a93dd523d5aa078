"""A tiny worker for the GUI job tests: `python event_job.py MODE [N]`.

Modes: ok, tokens N, error, crash_exit, crash_kill, graceful, ignore_sigint,
ignore_all, requests, plain_output. With EVENT_JOB_LOG set, events are also appended to
that file (a run folder's events.jsonl, as the detached workers do). Each emits `started` once its signal
handlers are in place, so a test may stop it as soon as that event arrives.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from medalpaca_desktop.core.events import Done, Error, EventWriter, Progress, Started, Token


def _sleep_forever() -> None:
    while True:
        time.sleep(0.05)


def main() -> int:
    mode = sys.argv[1]
    if mode == "plain_output":  # a command that prints one JSON document, like `devices --json`
        print(json.dumps({"answer": 42, "lines": ["a", "b"]}, indent=2))
        return 0
    events = EventWriter.claim_stdout(os.environ.get("EVENT_JOB_LOG") or None)
    if mode == "ok":
        events.emit(Started(job="ok"))
        print("a stray print from a library")  # lands on stderr after claim_stdout
        events._stream.write("this is not json\n{broken json\n")  # garbage on the event stream itself
        events._stream.write('{"type":"progress","v":999}\n')  # unknown protocol version
        events._stream.flush()
        for i in range(1, 4):
            events.emit(Progress(stage="work", current=i, total=3, unit="steps"))
        events.emit(Done(ok=True, data={"answer": 42}))
        return 0
    if mode == "tokens":
        count = int(sys.argv[2])
        events.emit(Started(job="tokens"))
        for i in range(count):
            events.emit(Token(text=f"t{i} ", request_id="r1"))
        events.emit(Done(ok=True))
        return 0
    if mode == "error":
        events.emit(Started(job="error"))
        print("loading something", file=sys.stderr)
        events.emit(Error(message="The model file is not a GGUF file.", detail="bad magic"))
        events.emit(Done(ok=False))
        return 1
    if mode == "crash_exit":
        events.emit(Started(job="crash_exit"))
        print("about to fail hard", file=sys.stderr, flush=True)
        os._exit(7)  # no ExitCode: a foreign status, as a native crash gives
    if mode == "crash_kill":
        events.emit(Started(job="crash_kill"))
        print("killing myself", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "graceful":  # like the real workers (core.stop_signals): the handler only flags the stop
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
        events.emit(Started(job="graceful"))
        while not stop.wait(0.05):
            pass
        events.emit(Done(ok=False, stopped=True))  # never from the handler: emit's lock may be held
        return 0
    if mode == "ignore_sigint":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        events.emit(Started(job="ignore_sigint"))
        _sleep_forever()
    if mode == "ignore_all":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        events.emit(Started(job="ignore_all"))
        _sleep_forever()
    if mode == "requests":
        events.emit(Started(job="requests"))
        for line in sys.stdin:
            request = json.loads(line)
            if request.get("type") == "stop":
                events.emit(Done(ok=False, stopped=True))
                return 0
            events.emit(Token(text=f"echo:{request.get('prompt', '')}"))
        return 0
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
