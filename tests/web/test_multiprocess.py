"""``create_app`` served by several processes on one store, as ``uvicorn --workers N`` and
gunicorn with uvicorn's worker serve it (docs/serve.md, "Several processes"): whichever
process answers a request, it is answered alike.

The main test runs two single-worker uvicorn processes on two ports against one store:
from the app's point of view that is what ``--workers 2`` is (each worker imports the
module, builds its own app, opens its own pool), and a test can then choose which
process answers each request. The smoke tests run the real ``uvicorn --workers 2`` and
``gunicorn -k uvicorn.workers.UvicornWorker -w 2``, see both processes answer, and stop
the master with SIGTERM while event streams are open and a request is in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import forked
from tests.web.helpers import ADMIN, READ, ROOT, env, free_port, parse_sse, start_worker

pytestmark = pytest.mark.slow

APP = "tests.web.workers_app:asgi"
BEARER = {"Authorization": f"Bearer {ADMIN}"}
#: The counters of /metrics, which must never go down from one scrape to the next.
COUNTERS = ("tether_llm_calls_total", 'tether_llm_tokens_total{type="input",outcome="spent"}',
            'tether_llm_cost_usd_total{outcome="spent"}', "tether_step_duration_seconds_count",
            'tether_step_duration_seconds_bucket{le="+Inf"}', "tether_step_duration_seconds_sum")


class Server:
    """An ASGI server process (uvicorn or gunicorn) serving ``APP`` on a loopback port."""

    def __init__(self, command: list[str], db: str, tmp: Path, *, port: int,
                 metrics_interval: float = 15.0, path: tuple[str, ...] = ()) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = tmp / f"server-{port}-{time.monotonic_ns()}.log"
        tokens = tmp / "tokens"
        tokens.write_text(f"admin:{ADMIN}\nread:{READ}\n")
        tokens.chmod(0o600)
        with open(self.log, "wb") as out:
            self.proc = forked.Popen(
                command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env=env(TETHER_DATABASE_URL=db, TETHER_TEST_TOKEN_FILE=str(tokens),
                        TETHER_TEST_METRICS_INTERVAL=str(metrics_interval),
                        PYTHONPATH=os.pathsep.join((str(ROOT / "src"), str(ROOT), *path))))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the server did not come up: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def uvicorn(db: str, tmp: Path, *args: str, metrics_interval: float = 15.0) -> Server:
    port = free_port()
    return Server([sys.executable, "-m", "uvicorn", APP, "--port", str(port), *args], db,
                  tmp, port=port, metrics_interval=metrics_interval)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def _value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _until(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _status(url: str, run_id: str) -> str:
    return str(httpx.get(f"{url}/api/v1/runs/{run_id}", headers=BEARER).json()["status"])


def _hidden_fields(page: str, action: str) -> dict[str, str]:
    form = re.search(r'<form method="post" action="' + re.escape(action) + r'"(.*?)</form>',
                     page, re.S)
    assert form is not None, page
    return {k: html.unescape(v) for k, v in
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1))}


def test_two_processes_on_one_store_answer_every_request_alike(store_url: str,
                                                               tmp_path: Path) -> None:
    """Two uvicorn processes (``a`` and ``b``) on one store and a worker: tokens, a
    session and its CSRF token, an approval (its id and time) shown by one and answered
    through the other, a signal sent through one waking the run the worker serves, an
    event stream resumed at the other with Last-Event-ID (every event once), the MCP
    face, and /metrics, whose counters never go down from one scrape to the next,
    whichever process answers each. Before the figures were shared through the store, a
    process that had computed them before the others kept serving its older ones until
    its next computation (15 s by default): a scraper behind one address saw
    ``tether_llm_calls_total`` go from 2 back to 0 (a counter reset to Prometheus).

    ``a`` computes the whole-store figures at most once an hour, ``b`` in each scrape
    (``metrics_interval=0``): ``a``'s would be stale all through the test on its own."""
    worker = start_worker(store_url, tmp_path)
    try:
        with running(uvicorn(store_url, tmp_path, metrics_interval=3600)) as a, \
                running(uvicorn(store_url, tmp_path, metrics_interval=0)) as b:
            with httpx.Client(base_url=a.url) as browser, \
                    httpx.Client(base_url=b.url) as elsewhere:
                _check_pair(a, b, browser, elsewhere)
    finally:
        worker.terminate()
        worker.wait(30)
    for server in (a, b):
        log = server.log.read_text()
        assert "Traceback" not in log and "ERROR" not in log, log


def _check_pair(a: Server, b: Server, browser: httpx.Client,
                elsewhere: httpx.Client) -> None:
    """``browser`` and ``elsewhere``: a browser's clients of ``a`` and ``b``."""
    # -- tokens: each process knows them (bearer, read-only, none) --
    for s in (a, b):
        assert httpx.get(s.url + "/api/v1/runs", headers=BEARER).status_code == 200
        assert httpx.get(s.url + "/api/v1/runs").status_code == 401
        r = httpx.post(s.url + "/api/v1/runs", json={"workflow": "greet", "input": ["x"]},
                       headers={"Authorization": f"Bearer {READ}"})
        assert r.status_code == 403, r.text

    # -- /metrics: a scrape of `a` computes its figures once, before anything ran --
    seen: dict[str, float] = {}

    def scrape(s: Server) -> str:
        r = httpx.get(s.url + "/metrics", headers=BEARER)
        assert r.status_code == 200, r.text
        for name in COUNTERS:
            value = _value(r.text, name)
            assert value is not None, (name, r.text)
            assert value >= seen.get(name, 0.0), (s.url, name, value, seen)
            seen[name] = value
        return r.text

    assert _value(scrape(a), "tether_llm_calls_total") == 0
    r = httpx.post(b.url + "/api/v1/runs", headers=BEARER,
                   json={"workflow": "paid_family", "input": [2], "run_id": "paid"})
    assert r.status_code == 201, r.text
    _until("paid completed", lambda: _status(a.url, "paid") == "completed")
    assert _value(scrape(b), "tether_llm_calls_total") == 2
    for s in (a, b, a):  # (a: no computation of its own since the first)
        assert _value(scrape(s), "tether_llm_calls_total") == 2

    # -- a session logged in at `a` is one at `b`, and so is its CSRF token --
    browser.get("/login")
    csrf = browser.cookies["tether_csrf"]
    r = browser.post("/login", data={"token": ADMIN, "csrf": csrf})
    assert r.status_code == 303, r.text
    elsewhere.cookies = browser.cookies  # (a browser sends them to either process)
    page = elsewhere.get("/runs")
    assert page.status_code == 200 and "paid" in page.text, page.text

    # -- an approval shown by `b` (its id and time in the form) answered through `a` --
    r = httpx.post(a.url + "/api/v1/runs", headers=BEARER,
                   json={"workflow": "purchase", "input": ["atlas"], "run_id": "buy"})
    assert r.status_code == 201, r.text
    listed = _until("the approval is listed", lambda: httpx.get(
        b.url + "/api/v1/approvals", headers=BEARER).json()["approvals"])
    assert [p["run_id"] for p in listed] == ["buy"]
    fields = _hidden_fields(_until("the inbox shows the approval", lambda: (
        lambda text: text if 'action="/ui/runs/buy/approval"' in text else None)(
        elsewhere.get("/approvals").text)), "/ui/runs/buy/approval")
    assert fields["csrf"] == csrf and fields["approval_id"] == "1" and fields["since"]
    r = browser.post("/ui/runs/buy/approval", data={**fields, "decision": "approve",
                                                    "note": "through a"})
    assert r.status_code == 303, r.text
    _until("buy completed", lambda: _status(b.url, "buy") == "completed")
    done = httpx.get(b.url + "/api/v1/runs/buy", headers=BEARER).json()
    assert done["result"] == {"approved": True, "note": "through a"}

    # -- a signal sent through `b` wakes the run; its events read at `a`, then resumed at
    # `b` from the last one `a` sent: every event once --
    r = httpx.post(a.url + "/api/v1/runs", headers=BEARER,
                   json={"workflow": "wait_go", "run_id": "sig"})
    assert r.status_code == 201, r.text
    _until("sig waiting", lambda: _status(b.url, "sig") == "waiting")
    first = []
    with httpx.stream("GET", a.url + "/api/v1/runs/sig/events", headers=BEARER,
                      timeout=30) as resp:
        assert resp.status_code == 200
        for ev in parse_sse(resp.iter_lines()):
            first.append(ev)
            if ev.event == "status" and isinstance(ev.data, dict) and \
                    ev.data.get("status") == "waiting":
                break
    assert first and first[-1].id is not None
    r = httpx.post(b.url + "/api/v1/runs/sig/signals/go", headers=BEARER,
                   json={"data": "through b"})
    assert r.status_code == 202 and r.json()["created"] is True, r.text
    second = []
    with httpx.stream("GET", b.url + "/api/v1/runs/sig/events", timeout=30,
                      headers={**BEARER, "Last-Event-ID": str(first[-1].id)}) as resp:
        for ev in parse_sse(resp.iter_lines()):
            second.append(ev)
            if ev.event == "end":
                break
    assert second[-1].event == "end"
    assert httpx.get(a.url + "/api/v1/runs/sig", headers=BEARER).json()["result"] == \
        "through b"
    whole = []
    with httpx.stream("GET", a.url + "/api/v1/runs/sig/events", headers=BEARER,
                      timeout=30) as resp:
        for ev in parse_sse(resp.iter_lines()):
            whole.append(ev)
            if ev.event == "end":
                break
    ids = [e.id for e in first + second if e.id is not None]
    assert ids == [e.id for e in whole if e.id is not None], (first, second, whole)
    assert len(set(ids)) == len(ids)

    # -- the MCP face: tools listed by one, a tool called through the other --
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def mcp() -> tuple[list[str], str]:
        import httpx2

        async with httpx2.AsyncClient(headers=BEARER) as http, Client(
                streamable_http_client(a.url + "/mcp", http_client=http)) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
        async with httpx2.AsyncClient(headers=BEARER, timeout=60) as http, Client(
                streamable_http_client(b.url + "/mcp", http_client=http)) as client:
            result = await client.call_tool("greet", {"name": "both"})
        return tools, result.content[0].text  # type: ignore[union-attr]

    tools, text = asyncio.run(mcp())
    assert "greet" in tools and text == "hello both"

    # -- /metrics once more, alternating: nothing went down (`scrape`) --
    for s in (b, a, b, a):
        scrape(s)
    assert seen["tether_llm_calls_total"] == 2


def _pids_answering(url: str) -> set[str]:
    """The processes that answered, on new connections, until two did."""
    pids: set[str] = set()

    def one() -> None:
        r = httpx.get(url + "/api/v1/runs", headers={**BEARER, "Connection": "close"})
        assert r.status_code == 200, r.text
        pids.add(r.headers["x-test-pid"])

    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(8) as pool:
        while len(pids) < 2 and time.monotonic() < deadline:
            list(pool.map(lambda _: one(), range(16)))
    return pids


def _open_streams(url: str, run_id: str, count: int) -> tuple[list[list[str]], list[Any]]:
    """``count`` event streams of ``run_id``, each read in a thread until it ends: the
    events of each (``closed`` once it ended cleanly), and the threads."""
    events: list[list[str]] = [[] for _ in range(count)]
    opened = threading.Semaphore(0)

    def read(out: list[str]) -> None:
        try:
            with httpx.stream("GET", f"{url}/api/v1/runs/{run_id}/events", headers=BEARER,
                              timeout=httpx.Timeout(120)) as resp:
                assert resp.status_code == 200
                lines = resp.iter_lines()
                assert next(lines) == "retry: 1000"
                opened.release()
                out.extend(ev.event for ev in parse_sse(lines))
            out.append("closed")
        except httpx.HTTPError as exc:
            out.append(f"error: {type(exc).__name__}")
            opened.release()

    threads = [threading.Thread(target=read, args=(out,), daemon=True) for out in events]
    for t in threads:
        t.start()
    for _ in threads:
        assert opened.acquire(timeout=30), "a stream did not begin"
    return events, threads


#: The body of the start ``_held_start`` sends, in two halves.
HELD_BODY = (b'{"workflow": "greet", ', b'"input": ["drained"], "run_id": "held"}')


def _held_start(url: str) -> socket.socket:
    """A request in progress: a start's headers sent, and the first half of its body."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=30)
    conn.sendall(b"POST /api/v1/runs HTTP/1.1\r\nhost: %s:%s\r\nexpect: 100-continue\r\n"
                 b"authorization: Bearer %s\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n"
                 % (host.encode(), port.encode(), ADMIN.encode(), len(b"".join(HELD_BODY))))
    assert conn.recv(100).startswith(b"HTTP/1.1 100 ")
    conn.sendall(HELD_BODY[0])
    return conn


def _stop_with_streams_and_a_request(server: Server) -> None:
    """SIGTERM to the master while event streams are open in its processes and a start
    is half sent: the streams end cleanly (no ``end``: the run has not ended, a browser
    reconnects), the start is answered 201 once its body comes, the server exits 0."""
    r = httpx.post(server.url + "/api/v1/runs", headers=BEARER,
                   json={"workflow": "wait_go", "run_id": "w1"})
    assert r.status_code == 201, r.text
    events, threads = _open_streams(server.url, "w1", 6)
    conn = _held_start(server.url)
    try:
        server.proc.send_signal(signal.SIGTERM)
        # (both processes begin to shut down, then the body's second half comes)
        _until("shutting down", lambda: server.log.read_text().count("Shutting down") >= 2)
        conn.sendall(HELD_BODY[1])
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 201 "), answer
    finally:
        conn.close()
    assert server.proc.wait(60) == 0, server.log.read_text()
    for t in threads:
        t.join(30)
    assert all(e[-1:] == ["closed"] and "end" not in e for e in events), events
    log = server.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "Exception in ASGI application" not in log


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/tether.db"


def test_uvicorn_with_two_workers_serves_from_both_and_stops_cleanly(
        sqlite_db: str, tmp_path: Path) -> None:
    server = uvicorn(sqlite_db, tmp_path, "--workers", "2")
    with running(server):
        assert len(_pids_answering(server.url)) == 2, server.log.read_text()
        _stop_with_streams_and_a_request(server)


@pytest.mark.postgres
def test_gunicorn_with_two_uvicorn_workers_serves_from_both_and_stops_cleanly(
        pg_migrated_url: str, tmp_path: Path) -> None:
    gunicorn = pytest.importorskip("gunicorn")
    port = free_port()
    where = str(Path(gunicorn.__file__).parents[1])  # (installed apart from the venv?)
    server = Server([sys.executable, "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker",
                     "-w", "2", "-b", f"127.0.0.1:{port}", "--no-control-socket", APP],
                    pg_migrated_url, tmp_path, port=port,
                    path=() if where in sys.path[1:] and where.startswith(sys.prefix)
                    else (where,))
    with running(server):
        assert len(_pids_answering(server.url)) == 2, server.log.read_text()
        _stop_with_streams_and_a_request(server)


def test_a_process_at_its_request_limit_ends_its_streams_and_exits(
        sqlite_db: str, tmp_path: Path) -> None:
    """uvicorn's ``--limit-max-requests`` (gunicorn's ``--max-requests`` sets it in
    uvicorn's worker; ``--workers`` then starts a new process) begins a shutdown
    without a signal: the event stream open in the process ends (no ``end``: the client
    reconnects, to another process) and the process exits 0. Before, it waited for
    ever for the stream ("Waiting for connections to close"), serving nothing."""
    server = uvicorn(sqlite_db, tmp_path, "--limit-max-requests", "3")
    with running(server):
        r = httpx.post(server.url + "/api/v1/runs", headers=BEARER,
                       json={"workflow": "wait_go", "run_id": "w1"})
        assert r.status_code == 201, r.text  # (request 1; 2 is the stream's, 3 this)
        events, threads = _open_streams(server.url, "w1", 1)
        assert httpx.get(server.url + "/api/v1/runs", headers=BEARER).status_code == 200
        assert server.proc.wait(30) == 0, server.log.read_text()
        threads[0].join(30)
    assert events[0][-1:] == ["closed"] and "end" not in events[0], events
    log = server.log.read_text()
    assert "Maximum request limit of 3 exceeded" in log
    assert "Traceback" not in log and "ERROR" not in log, log
