"""``tether serve --max-connections``: past the limit a request gets 503
``too_many_connections`` in the API's JSON error shape, with ``Retry-After``, and its
connection is closed; ``/healthz`` and ``/metrics`` are still answered; event streams
hold their place; service resumes when connections close. On a real ``tether serve``
process, with real sockets on loopback. Before, nothing bounded the connections but the
process's file-descriptor limit, past which the store's connections and log files
failed each in its own way."""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import Served, serving
from tether.serve import default_max_connections
from tether.serve._server import FD_RESERVE, SPARE_CONNECTIONS

pytestmark = pytest.mark.slow

#: The server's --max-connections in these tests.
LIMIT = 3
#: How long a test waits for an answer, or for a connection to be closed.
PATIENCE = 30.0


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=PATIENCE)


def _request(sock: socket.socket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def _parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ", 2)[1]), headers, body


def _hold_stream(url: str, run_id: str) -> socket.socket:
    """A connection holding the event stream of ``run_id`` open (its headers read).
    (A connection the server has not seen closed yet, the readiness probe's, may hold a
    place a moment: a 503 then is tried again.)"""
    deadline = time.monotonic() + PATIENCE
    while True:
        sock = _connect(url)
        _request(sock, f"/api/v1/runs/{run_id}/events")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, head
            head += chunk
        if head.startswith(b"HTTP/1.1 200"):
            return sock
        sock.close()
        assert time.monotonic() < deadline, head
        time.sleep(0.1)


def _refused(answer: bytes) -> None:
    status, headers, body = _parse(answer)
    assert status == 503, answer
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "1"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "too_many_connections"
    assert f"limit of {LIMIT} connections" in error["message"]


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Served, list[socket.socket]]]:
    """A server with --max-connections LIMIT, and LIMIT event streams held open."""
    with serving(f"sqlite:///{tmp_path}/s.db", tmp_path,
                 args=("--max-connections", str(LIMIT))) as served:
        body = {"workflow": "greet", "input": ["x"], "run_id": "r1"}
        assert httpx.post(served.url + "/api/v1/runs", json=body,
                          timeout=PATIENCE).status_code == 201
        streams = [_hold_stream(served.url, "r1") for _ in range(LIMIT)]
        try:
            yield served, streams
        finally:
            for sock in streams:
                sock.close()


def test_past_the_limit_a_request_gets_503_json_and_service_resumes(
        held: tuple[Served, list[socket.socket]]) -> None:
    served, streams = held
    url = served.url
    sock = _connect(url)
    _request(sock, "/api/v1/runs")
    _refused(_read_all(sock))  # (read to the end: the server closed the connection)
    sock.close()

    # The operator still sees the server, and the refusal, on a connection of its own.
    for path in ("/healthz", "/metrics"):
        sock = _connect(url)
        _request(sock, path)
        status, headers, body = _parse(_read_all(sock))
        sock.close()
        assert (path, status, headers["connection"]) == (path, 200, "close")
    lines = body.decode().splitlines()
    assert f"tether_serve_connections_max {LIMIT}" in lines
    refused = [line for line in lines if line.startswith("tether_serve_connections_refused")]
    assert refused and int(refused[0].split()[1]) >= 1, lines
    assert f"over the limit of {LIMIT} (--max-connections" in served.log.read_text()

    # An admitted connection is served as before: the streams are still open.
    streams[0].close()
    deadline = time.monotonic() + PATIENCE
    while True:  # (until the server has seen that connection closed)
        answer = httpx.get(url + "/api/v1/runs", timeout=PATIENCE)
        if answer.status_code == 200:
            break
        assert answer.status_code == 503 and time.monotonic() < deadline, answer.text
        time.sleep(0.1)
    assert [r["run_id"] for r in answer.json()["runs"]] == ["r1"]


def test_past_the_spare_connections_the_503_comes_before_any_request(
        held: tuple[Served, list[socket.socket]]) -> None:
    """SPARE_CONNECTIONS connections past the limit wait for their request; the next
    gets its 503 without sending one, and is closed: a flood holds no more
    descriptors than that."""
    url = held[0].url
    waiting = [_connect(url) for _ in range(SPARE_CONNECTIONS)]
    try:
        sock = _connect(url)
        _refused(_read_all(sock))
        sock.close()
        # A waiting one is still answered when its request comes.
        _request(waiting[0], "/api/v1/runs")
        _refused(_read_all(waiting[0]))
    finally:
        for sock in waiting:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_client_timeout(
        tmp_path: Path) -> None:
    """Before, uvicorn held a connection that never sent a byte for ever: a few of
    them took every place under the limit."""
    with serving(f"sqlite:///{tmp_path}/s.db", tmp_path,
                 args=("--max-connections", "1", "--client-timeout", "1")) as served:
        sock = _connect(served.url)
        try:
            assert _read_all(sock) == b""  # (closed by the server, silently)
        finally:
            sock.close()
        assert httpx.get(served.url + "/api/v1/runs", timeout=PATIENCE).status_code == 200


def test_max_connections_0_is_no_limit(tmp_path: Path) -> None:
    with serving(f"sqlite:///{tmp_path}/s.db", tmp_path,
                 args=("--max-connections", "0")) as served:
        scrape = httpx.get(served.url + "/metrics", timeout=PATIENCE)
        assert scrape.status_code == 200 and "tether_serve_connections" not in scrape.text


def test_the_default_limit_is_the_descriptor_limit_less_a_reserve() -> None:
    """Halved on SQLite, where an event stream holds two descriptors (its connection,
    and the Unix socket it hears the run's live events on)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (500, hard))
        assert default_max_connections("postgresql://db/tether") == 500 - FD_RESERVE
        assert default_max_connections("sqlite:///tether.db") == (500 - FD_RESERVE) // 2
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_RESERVE + 1, hard))
        assert default_max_connections("postgresql://db/tether") == SPARE_CONNECTIONS
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
