"""``tether serve`` stopped (SIGTERM: a deploy, a scale-down) while a run page's event
stream is open: the stream ends at once, with no ``end`` event (the run has not
ended; the browser reconnects from its last event), and the server exits with no
error in its log. uvicorn waited for the stream until its graceful-shutdown deadline
(3 s), then cancelled it: an ERROR "Exception in ASGI application" with a traceback at
every deploy while someone had a run open."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

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
        assert served.proc.wait(30) == 0  # (a clean shutdown)
    finally:
        served.stop()
    assert ended.wait(30)
    assert "end" not in events and not any(e.startswith("error") for e in events), events
    log = [json.loads(line) for line in served.log.read_text().splitlines()]
    assert [x for x in log if x["level"] in ("error", "critical")] == []
    assert any(x["message"] == "Finished server process" or
               x["message"].startswith("Finished server process") for x in log)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_clean_shutdown_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    """A stop signal that shuts the server down cleanly (every request answered, the
    app's shutdown done) exits 0: uvicorn raised the signal again once it had shut
    down, and the process ended "killed by SIGTERM" (-15; 143 from a shell), which
    systemd's Restart=on-failure, Kubernetes and supervisors record as a failure, at
    every deploy; SIGINT gave 130."""
    served = start_serve(f"sqlite:///{tmp_path}/s.db", tmp_path, app=None)
    try:
        assert httpx.get(served.url + "/api/v1/runs", timeout=10).status_code == 200
        served.proc.send_signal(sig)
        assert served.proc.wait(30) == 0, served.log.read_text()
    finally:
        served.stop()
    assert "shut down cleanly on " + sig.name in served.log.read_text()


def _held_request(url: str) -> socket.socket:
    """A connection with a request in progress: its headers sent, and half its body
    once the server reads it (its ``100 Continue``)."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(b"POST /api/v1/runs HTTP/1.1\r\nhost: %s:%s\r\nexpect: 100-continue\r\n"
                 b"content-type: application/json\r\ncontent-length: 100\r\n\r\n"
                 % (host.encode(), port.encode()))
    assert conn.recv(100).startswith(b"HTTP/1.1 100 ")
    conn.sendall(b'{"workflow": ')
    return conn


def test_a_shutdown_that_cancels_a_request_exits_1(tmp_path: Path) -> None:
    """A request still in progress at the graceful-shutdown deadline (3 s) is cancelled:
    the shutdown was not clean, and the exit status says so (1, with the reason on
    the error line), as a second signal forcing the exit does."""
    served = start_serve(f"sqlite:///{tmp_path}/s.db", tmp_path, app=None)
    conn = _held_request(served.url)
    try:
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 1, served.log.read_text()
    finally:
        conn.close()
        served.stop()
    log = served.log.read_text()
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in log
    assert ("the server did not shut down cleanly: requests still in progress 3 s after "
            "the signal were cancelled") in log


def test_a_second_sigint_forcing_the_exit_exits_1(tmp_path: Path) -> None:
    served = start_serve(f"sqlite:///{tmp_path}/s.db", tmp_path, app=None)
    conn = _held_request(served.url)
    try:
        served.proc.send_signal(signal.SIGINT)
        with open(served.log, "rb") as log:  # (the server waits for the request)
            while b"Waiting for connections to close" not in log.read():
                assert served.proc.poll() is None, served.log.read_text()
                log.seek(0)
                threading.Event().wait(0.05)
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(30) == 1, served.log.read_text()
    finally:
        conn.close()
        served.stop()
    assert ("the server did not shut down cleanly: a second stop signal forced the exit"
            in served.log.read_text())
