"""A client that sends a request slowly (slow loris) gets 408 and its connection is
closed, on a real ``tether serve`` process: before ``--client-timeout`` a connection that
had begun a request and then sent a header line (or a byte of its body) now and then was
held for as long as the client liked, each one a file descriptor of the server."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import serving

pytestmark = pytest.mark.slow

#: The server's --client-timeout in these tests.
LIMIT = 1.0
#: How long a slow client keeps trickling before the test gives up on an answer.
PATIENCE = 30.0


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE)
    return sock


def _trickle(sock: socket.socket, first: bytes, more: bytes) -> bytes:
    """Send ``first``, then ``more`` every 0.2 s until the server answers or closes
    (or PATIENCE passes); what it answered."""
    sock.sendall(first)
    sock.settimeout(0.2)
    answer = b""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            try:
                sock.sendall(more)
            except OSError:  # (closed by the server while we were sending)
                break
            continue
        except OSError:
            break
        if not chunk:
            break
        answer += chunk
    return answer


def _status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]["code"]


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_client_that_trickles_its_request_gets_408_and_is_cut_off(
        tmp_path: Path, phase: str) -> None:
    with serving(f"sqlite:///{tmp_path}/s.db", tmp_path,
                 args=("--client-timeout", str(LIMIT))) as served:
        sock = _connect(served.url)
        try:
            if phase == "headers":
                answer = _trickle(sock, b"GET /api/v1/runs HTTP/1.1\r\nHost: localhost\r\n",
                                  b"X-More: 1\r\n")
            else:
                answer = _trickle(sock, b"POST /api/v1/runs HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Content-Type: application/json\r\n"
                                  b"Content-Length: 100000\r\n\r\n{", b" ")
            # Meanwhile other clients were served, and still are.
            assert httpx.get(served.url + "/api/v1/runs", timeout=PATIENCE).status_code == 200
        finally:
            sock.close()
        assert answer, f"no answer to a slow client within {PATIENCE} s"
        assert _status_and_error(answer) == (408, "request_timeout")
        assert b"connection: close" in answer.lower()


def test_requests_at_a_normal_pace_and_long_event_streams_are_not_cut(
        tmp_path: Path) -> None:
    """The deadline is on receiving a request, not on answering it: a request whose body
    comes in parts, each soon, is served, and an event stream stays open past the
    limit."""
    with serving(f"sqlite:///{tmp_path}/s.db", tmp_path,
                 args=("--client-timeout", str(LIMIT))) as served:
        body = json.dumps({"workflow": "greet", "input": ["x"], "run_id": "r1"}).encode()
        sock = _connect(served.url)
        try:
            sock.sendall(b"POST /api/v1/runs HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body))
            for i in range(0, len(body), 8):
                sock.sendall(body[i:i + 8])
            answer = sock.recv(65536)
        finally:
            sock.close()
        assert answer.split(b" ", 2)[1] in (b"200", b"201"), answer
        with httpx.stream("GET", served.url + "/api/v1/runs/r1/events",
                          timeout=PATIENCE) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines).startswith("retry:")
            # The run is queued (no worker here): the stream waits past the limit, and
            # still brings the run's end when it is cancelled.
            time.sleep(3 * LIMIT)
            assert httpx.post(served.url + "/api/v1/runs/r1/cancel",
                              timeout=PATIENCE).status_code == 202
            events = [line for line in lines if line.startswith("event:")]
        assert events[-1] == "event: end"
