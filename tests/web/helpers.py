"""Shared by the web tests: real ``tether serve`` and worker processes, SSE reading."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests import forked

ROOT = Path(__file__).resolve().parents[2]
TETHER = [sys.executable, "-m", "tether"]
ADMIN = "admin-token-0123456789"
READ = "read-token-0123456789"
WEBAPP = "tests.web.webapp:app"


def words(page: str) -> str:
    """``page`` (HTML) with the spans that keep its ids whole on a line taken off
    (``tether.serve._ui.with_ids``: ``<span class="id">run-1.</span>``): its words as
    a person reads them, to find a sentence in."""
    return re.sub(r'<span class="id">(.*?)</span>', r"\1", page)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(**extra: str) -> dict[str, str]:
    """The environment of a test's ``tether`` process: this checkout's code (``src/``
    first, before an installed Tether), not whichever the interpreter would find."""
    out = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT))),
           **extra}
    out.pop("TETHER_API_TOKENS", None)
    return {**out, **extra}


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_serve(db: str, tmp: Path, *, tokens: str | None = None, app: str | None = WEBAPP,
                extra_env: dict[str, str] | None = None, port: int | None = None,
                args: tuple[str, ...] = ()) -> Served:
    """A ``tether serve`` process on ``port`` (default: a free loopback port), answering
    /healthz; on the store ``db`` (``""``: no ``--db``, the ``app``'s own).

    A port this chose may be taken between ``free_port`` and the server's bind (by any
    process on the machine: seen once in ~30 runs of tests/ai/test_interrupt.py beside
    another copy, "address already in use"): the server is then started again on
    another port, a few times."""
    if port is not None:
        return _start_serve(db, tmp, tokens, app, extra_env, port, args)
    for _ in range(4):
        try:
            return _start_serve(db, tmp, tokens, app, extra_env, free_port(), args)
        except _PortTaken:
            continue
    return _start_serve(db, tmp, tokens, app, extra_env, free_port(), args)


class _PortTaken(AssertionError):
    """The server could not bind its port: another process took it meanwhile."""


def _start_serve(db: str, tmp: Path, tokens: str | None, app: str | None,
                 extra_env: dict[str, str] | None, port: int, args: tuple[str, ...],
                 ) -> Served:
    log = tmp / f"serve-{port}-{time.monotonic_ns()}.log"
    extra_args = args
    args = [*TETHER, "serve", *(("--db", db) if db else ()), "--port", str(port),
            *extra_args]
    if app:
        args += ["--app", app]
    if tokens is not None:
        token_file = tmp / f"tokens-{port}.txt"
        token_file.write_text(tokens)
        args += ["--token-file", str(token_file)]
    with open(log, "wb") as out:
        proc = forked.Popen(args, cwd=ROOT, env=env(**(extra_env or {})), stdout=out,
                            stderr=subprocess.STDOUT)
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text()
            if "address already in use" in text:
                raise _PortTaken(f"tether serve exited: {text}")
            raise AssertionError(f"tether serve exited: {text}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(served.url + "/healthz", timeout=1).status_code == 200:
                return served
        time.sleep(0.1)
    served.stop()
    raise AssertionError(f"tether serve did not come up: {log.read_text()}")


def start_worker(db: str, tmp: Path, *, app: str = WEBAPP,
                 extra_env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    log = tmp / f"worker-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        return subprocess.Popen([*TETHER, "worker", app, "--db", db, *args], cwd=ROOT,
                                env=env(**(extra_env or {})), stdout=out,
                                stderr=subprocess.STDOUT)


def wait_for(url: str, run_id: str, status: str, timeout: float = 30) -> dict[str, object]:
    """The document of run ``run_id`` (the API of the server at ``url``, as admin) once
    its status is ``status``; an ``AssertionError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = httpx.get(f"{url}/api/v1/runs/{run_id}",
                        headers={"Authorization": f"Bearer {ADMIN}"}).json()
        if doc.get("status") == status:
            return dict(doc)
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not become {status}: {doc}")


async def blocked_in_a_timed_wait(url: str, run_id: str) -> None:
    """Run ``run_id`` on the store ``url`` to a signal wait with a timeout (journaled,
    pending, with its deadline) after a step ``a``, then, its signal sent, replay it
    under code that asks for a step ``b`` first (non-determinism): it ends blocked, the
    wait still pending."""
    import tether
    from tether import App

    for first in ("a", "b"):
        app = App(url)

        @app.step
        async def a() -> int:
            return 1

        @app.step
        async def b() -> int:
            return 2

        @app.workflow
        async def patient(first: str = first) -> int:
            await (a() if first == "a" else b())
            return int(await tether.wait_for_signal("go", timeout=3600))

        async with app, app.worker():
            if first == "a":
                await app.start(patient, run_id=run_id)
                status = "waiting"
            else:
                await app.signal(run_id, "go", 1)
                status = "blocked"
            async with asyncio.timeout(30):
                while (await app.store.run_get(run_id)).status != status:
                    await asyncio.sleep(0.02)


#: A run a test starts through the API: its workflow (``tests.web.webapp``), its id,
#: its arguments, and the status to wait for before the pages are looked at.
Start = tuple[str, str, list[object], str]


@dataclass
class Site:
    """A ``tether serve`` (admin token ``ADMIN``) and a worker of the test workflows on
    one SQLite store, with runs started on it (``phone_site``)."""
    served: Served
    worker: subprocess.Popen[bytes]
    db: str

    @property
    def url(self) -> str:
        return self.served.url

    def start(self, workflow: str, run_id: str, args: list[object]) -> None:
        """Start ``run_id`` through the API (201: a new run)."""
        r = httpx.post(self.url + "/api/v1/runs", headers={"Authorization": f"Bearer {ADMIN}"},
                       json={"workflow": workflow, "input": args, "run_id": run_id})
        assert r.status_code == 201, r.text

    def signal(self, run_id: str, name: str, data: object = None) -> None:
        """Send ``run_id`` the signal ``name`` through the API."""
        r = httpx.post(f"{self.url}/api/v1/runs/{run_id}/signals/{name}",
                       headers={"Authorization": f"Bearer {ADMIN}"}, json={"data": data})
        assert r.status_code in (200, 202), r.text

    def fork(self, run_id: str, at: int, new_id: str) -> None:
        """Fork ``run_id`` at position ``at`` as the new run ``new_id``, through the API."""
        r = httpx.post(f"{self.url}/api/v1/runs/{run_id}/fork",
                       headers={"Authorization": f"Bearer {ADMIN}"},
                       json={"at": at, "run_id": new_id})
        assert r.status_code == 201, r.text


@contextlib.contextmanager
def phone_site(tmp: Path, name: str, runs: Sequence[Start] = (), *,
               blocked: Sequence[str] = (),
               worker_env: dict[str, str] | None = None) -> Iterator[Site]:
    """The set-up of the browser tests of the pages on a phone: the store
    ``tmp/name.db`` with the runs ``blocked`` (``blocked_in_a_timed_wait``), a server
    and a worker on it, and ``runs`` started, each in its status; stopped on exit."""
    db = f"sqlite:///{tmp}/{name}.db"
    for run_id in blocked:
        # (Playwright's sync API runs an event loop in the test's thread: another one)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, blocked_in_a_timed_wait(db, run_id)).result()
    served = start_serve(db, tmp, tokens=f"admin:{ADMIN}\n", app=WEBAPP)
    try:
        worker = start_worker(db, tmp, extra_env=worker_env)
    except BaseException:
        served.stop()
        raise
    site = Site(served, worker, db)
    try:
        for workflow, run_id, args, _ in runs:
            site.start(workflow, run_id, args)
        for _, run_id, _, status in runs:
            wait_for(site.url, run_id, status)
        yield site
    finally:
        worker.terminate()
        worker.wait(10)
        served.stop()


#: A phone's window: 390 x 844 CSS pixels.
PHONE = {"width": 390, "height": 844}


@contextlib.contextmanager
def logged_in(browser: Any, url: str, *, viewport: dict[str, int] | None = None,
              scheme: str | None = None, touch: bool = True) -> Iterator[Any]:
    """A page (Playwright's) of a new browser context logged in to the server at ``url``
    as admin, on the runs list: at ``viewport`` (``PHONE``), in the colour ``scheme``
    (``"light"``, ``"dark"``; ``None``: the browser's), a touch screen unless ``touch``
    is false (then a pointer hovers, as a mouse does). The context is closed on exit."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=viewport or PHONE, color_scheme=scheme,
                                  has_touch=touch, is_mobile=touch)
    try:
        page = context.new_page()
        page.goto(url + "/login")
        page.fill("input[name=token]", ADMIN)
        page.press("input[name=token]", "Enter")
        expect(page).to_have_url(url + "/runs")
        yield page
    finally:
        context.close()


@contextlib.contextmanager
def serving(db: str, tmp: Path, **kw: object) -> Iterator[Served]:
    served = start_serve(db, tmp, **kw)  # type: ignore[arg-type]
    try:
        yield served
    finally:
        served.stop()


@dataclass
class Event:
    id: str | None
    event: str
    data: object


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Events from an SSE line stream (comments and retry lines skipped)."""
    ev_id: str | None = None
    kind = "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Event(ev_id, kind, json.loads("\n".join(data)))
            ev_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            ev_id = value
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)


@contextlib.asynccontextmanager
async def ui_client(url: str, *, max_body: int | None = None
                    ) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client (no bearer header) of an in-process ``tether serve`` with an
    admin and a read token (``ADMIN``, ``READ``), over the test workflows' App on the
    store ``url`` (``tests.web.webapp``); ``client.app`` is that App. ``max_body``: the
    server's body limit (``--max-body``), else its default."""
    from tests.web import webapp
    from tether.serve import DEFAULT_MAX_BODY, Tokens, create_app

    app = webapp.make_app(url)
    await app._open()
    asgi = create_app(app, tokens=Tokens({ADMIN: "admin", READ: "read"}), mcp=False,
                      max_body=DEFAULT_MAX_BODY if max_body is None else max_body)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://127.0.0.1") as http:
        http.app = app  # type: ignore[attr-defined]
        try:
            yield http
        finally:
            await app.close()



@contextlib.asynccontextmanager
async def served_app(app: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """``app`` (a ``tether.App``, opened here) and a client of an in-process ``tether
    serve`` over it with an admin and a read token (``ADMIN``, ``READ``): requests carry
    their own ``Authorization`` header."""
    from tether.serve import Tokens, create_app

    async with app:
        asgi = create_app(app, tokens=Tokens({ADMIN: "admin", READ: "read"}), mcp=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1") as http:
            yield app, http

def add_paid_rounds(app: Any) -> Any:
    """Register on ``app`` a workflow ``rounds(n)`` that runs one step paying 100 input
    tokens and $0.5 (one LLM call) and continues as new up to ``n`` = 2: the runs the
    /metrics tests purge and continue. Returns the workflow."""
    import tether
    from tether import ext

    @app.step
    async def paid(i: int) -> int:
        ext.add_metrics({"llm.calls": 1, "tokens.input": 100, "cost.usd": 0.5})
        return i

    @app.workflow
    async def rounds(n: int) -> int:
        await paid(n)
        if n < 2:
            tether.continue_as_new(n + 1)
        return n

    return rounds
