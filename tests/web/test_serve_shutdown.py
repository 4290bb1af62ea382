"""``tether serve`` stopped (SIGTERM: a deploy, a scale-down) while a run page's event
stream is open: the stream ends at once, with no ``end`` event (the run has not
ended; the browser reconnects from its last event), and the server exits with no
error in its log. uvicorn waited for the stream until its graceful-shutdown deadline
(3 s), then cancelled it: an ERROR "Exception in ASGI application" with a traceback at
every deploy while someone had a run open."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

import httpx

from tests.web.helpers import ROOT, TETHER, env, parse_sse, start_serve


def test_sigterm_ends_open_event_streams_and_logs_no_error(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/s.db"
    r = subprocess.run([*TETHER, "start", "wait_go", "--id", "w1", "--db", db], cwd=ROOT,
                       env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    served = start_serve(db, tmp_path, args=("--log-format", "json"))
    events: list[str] = []
    ended = threading.Event()
    opened = threading.Event()

    def read() -> None:
        try:
            with httpx.stream("GET", served.url + "/api/v1/runs/w1/events",
                              timeout=httpx.Timeout(60)) as resp:
                assert resp.status_code == 200
                lines = resp.iter_lines()
                assert next(lines) == "retry: 1000"  # (the stream has begun)
                opened.set()
                for ev in parse_sse(lines):
                    events.append(ev.event)
        except httpx.HTTPError as exc:  # (what a cancelled stream gives the client)
            events.append(f"error: {type(exc).__name__}")
        finally:
            ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert opened.wait(30), "the stream did not begin"
        served.proc.send_signal(signal.SIGTERM)
        # (uvicorn raises the signal again once it has shut down: -15, as a process
        # that SIGTERM ended)
        assert served.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        served.stop()
    assert ended.wait(30)
    assert "end" not in events and not any(e.startswith("error") for e in events), events
    log = [json.loads(line) for line in served.log.read_text().splitlines()]
    assert [x for x in log if x["level"] in ("error", "critical")] == []
    assert any(x["message"] == "Finished server process" or
               x["message"].startswith("Finished server process") for x in log)
