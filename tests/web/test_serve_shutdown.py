"""``tether serve`` stopped (SIGTERM: a deploy, a scale-down) while a run page's event
stream is open: the stream ends at once, with no ``end`` event (the run has not
ended; the browser reconnects from its last event), and the server exits with no
error in its log. uvicorn waited for the stream until its graceful-shutdown deadline
(3 s), then cancelled it: an ERROR "Exception in ASGI application" with a traceback at
every deploy while someone had a run open."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests import forked
from tests.web.helpers import ROOT, TETHER, env, free_port, parse_sse, start_serve


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
    assert ("the server did not shut down cleanly: a second SIGINT forced the exit"
            in served.log.read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_an_embedded_app_ends_its_event_streams_on_a_stop_signal(
        tmp_path: Path, sig: signal.Signals) -> None:
    """``create_app`` under the application's own uvicorn (docs/serve.md), a run page's
    event stream open: the stop signal ends the stream (no ``end`` event: the client
    reconnects from its last event) and the server shuts down, with nothing done by
    the embedding code. uvicorn tells the app (the lifespan's end) only after its
    connections closed: by default it waited for ever, until the browser left (with
    ``--timeout-graceful-shutdown``, until then, and the stream's cancellation was an
    ERROR with a traceback)."""
    db = f"sqlite:///{tmp_path}/s.db"
    r = subprocess.run([*TETHER, "start", "wait_go", "--id", "w1", "--db", db], cwd=ROOT,
                       env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    port = free_port()
    log = tmp_path / "uvicorn.log"
    with open(log, "wb") as out:
        proc = forked.Popen([sys.executable, "-m", "uvicorn", "tests.web.embedded_app:asgi",
                             "--port", str(port)], cwd=ROOT,
                            env=env(TETHER_DATABASE_URL=db), stdout=out,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    events: list[str] = []
    opened, ended = threading.Event(), threading.Event()

    def read() -> None:
        try:
            with httpx.stream("GET", url + "/api/v1/runs/w1/events",
                              timeout=httpx.Timeout(120)) as resp:
                assert resp.status_code == 200
                lines = resp.iter_lines()
                assert next(lines) == "retry: 1000"
                opened.set()
                for ev in parse_sse(lines):
                    events.append(ev.event)
            events.append("closed")
        except httpx.HTTPError as exc:
            events.append(f"error: {type(exc).__name__}")
        finally:
            ended.set()

    try:
        while proc.poll() is None:  # (until it listens)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            threading.Event().wait(0.1)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert opened.wait(30), log.read_text()
        proc.send_signal(sig)
        # (uvicorn's own exit status: it raises SIGTERM again once shut down)
        assert proc.wait(60) in (0, -signal.SIGTERM), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert ended.wait(30)
    assert events == ["closed"], events
    text = log.read_text()
    assert "Finished server process" in text
    assert "Exception in ASGI application" not in text and "Traceback" not in text
