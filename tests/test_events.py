"""The JSON-lines job protocol: round trips, tolerance of junk, stdout claiming."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from medalpaca_desktop.core import events as ev
from medalpaca_desktop.core.progress import ProgressReporter, format_duration


def test_every_event_type_round_trips():
    samples = [
        ev.Started(job="export", info={"model": "m"}),
        ev.Progress(stage="Writing", current=3, total=10, unit="tensors", rate=1.5, eta_s=4.6),
        ev.Metric(step=7, values={"loss": 1.25, "lr": 2e-5}),
        ev.Token(text="héllo 😀", request_id="r1"),
        ev.Log(level="warning", message="x"),
        ev.Warning(message="low disk"),
        ev.Checkpoint(path="/run/ckpt-10", step=10),
        ev.Result(data={"path": "/out.gguf"}),
        ev.Error(message="Out of memory", kind="oom", detail="CUDA ..."),
        ev.Done(ok=False, stopped=True),
    ]
    assert {e.type for e in samples} == set(ev.EVENT_CLASSES)
    for event in samples:
        line = event.to_json()
        assert "\n" not in line
        back = ev.parse_line(line)
        assert type(back) is type(event)
        assert back.to_dict() == event.to_dict()


def test_unknown_fields_survive_and_bad_lines_are_skipped():
    line = json.dumps({"type": "token", "v": 1, "text": "a", "time": 1.0, "logprob": -0.5})
    event = ev.parse_line(line)
    assert isinstance(event, ev.Token) and event.extra == {"logprob": -0.5}
    assert json.loads(event.to_json())["logprob"] == -0.5
    for junk in ["", "hello", "{not json", "[1,2]", '{"type":"token","v":99,"text":"x"}',
                 '{"type":"nope","v":1}', '{"type":"token","v":1,"text":"a","bogus"', '{"v":1}']:
        assert ev.parse_line(junk) is None, junk


def test_line_buffer_reassembles_chunks():
    buf = ev.LineBuffer()
    data = (ev.Token(text="a").to_json() + "\n" + ev.Token(text="é").to_json() + "\npartial").encode()
    lines = []
    for i in range(0, len(data), 3):  # splits inside multi-byte characters too
        lines += buf.feed(data[i:i + 3])
    assert [ev.parse_line(ln).text for ln in lines] == ["a", "é"]
    assert buf.flush() == ["partial"]


def test_claim_stdout_keeps_stray_prints_out_of_the_stream(tmp_path):
    script = textwrap.dedent(f"""
        import os
        from medalpaca_desktop.core import events as ev
        w = ev.EventWriter.claim_stdout(log_path={str(tmp_path / 'events.jsonl')!r})
        print("a library talking on stdout")
        os.write(1, b"C code writing to fd 1\\n")
        w.emit(ev.Started(job="t"))
        w.emit(ev.Done(ok=True))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    out_lines = proc.stdout.splitlines()
    assert [ev.parse_line(ln).type for ln in out_lines] == ["started", "done"]
    assert "a library talking on stdout" in proc.stderr and "C code writing" in proc.stderr
    assert [e.type for e in ev.read_events_file(tmp_path / "events.jsonl")] == ["started", "done"]


def test_events_file_with_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(ev.Metric(step=1, values={"loss": 2.0}).to_json() + "\n" + '{"type":"metric","v":1,"st')
    assert [e.step for e in ev.read_events_file(path)] == [1]


def test_progress_reporter_eta_and_events():
    captured = []

    class Sink:
        def emit(self, event):
            captured.append(event)

    rep = ProgressReporter("Writing", total=10, unit="tensors", events=Sink(), min_interval=0)
    rep._start -= 2.0  # pretend 2 s have passed
    rep.update(4)
    last = captured[-1]
    assert last.fraction == 0.4
    assert 2.5 < last.eta_s < 3.5  # 4 done in 2 s -> 6 left at 2/s
    rep.finish()
    assert captured[-1].current == 10 and captured[-1].eta_s == 0
    assert "ETA" in ProgressReporter.describe(last) and "40%" in ProgressReporter.describe(last)
    assert format_duration(3725) == "1h 02m" and format_duration(187) == "3m 07s" and format_duration(None) == "?"
