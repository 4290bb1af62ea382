"""``tether serve --root-path /tether`` behind a reverse proxy that publishes it under a
path of a shared host: every address the server sends out carries the prefix, every
route answers whether the proxy stripped it or not, and the cookies' ``Path`` is the
prefix. In process (httpx on the ASGI app), then for real: a ``tether serve`` process
behind ``tests/web/prefix_proxy.py`` in headless Chromium, with an MCP client."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests import forked
from tests.web import webapp
from tests.web.helpers import ADMIN, READ, ROOT, WEBAPP, env, free_port, start_serve, start_worker
from tether.serve import Tokens, create_app
from tether.serve._openapi import document
from tether.serve._paths import check_root_path

SERVE = ROOT / "src" / "tether" / "serve"
#: The attributes of a page that hold an address.
URL_ATTRIBUTE = re.compile(
    r"""\b(href|src|action|formaction|data-refresh|data-events)="([^"]*)\"""")


class Stripping(httpx.AsyncBaseTransport):
    """The ASGI app behind a proxy that strips ``/tether``: the client (its cookie jar
    too) sees ``/tether/runs``, the app ``/runs``."""

    def __init__(self, asgi: object) -> None:
        self.inner = httpx.ASGITransport(app=asgi)  # type: ignore[arg-type]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path
        assert path.startswith(b"/tether/"), path
        request.url = request.url.copy_with(raw_path=path[len(b"/tether"):])
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def ui(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of a server with tokens under the root path ``/tether``,
    through a proxy that strips the prefix (``base_url`` ends in ``/tether``); the
    ``raw`` attribute: a client of the app itself."""
    app = webapp.make_app(sqlite_url)
    await app._open()
    asgi = create_app(app, tokens=Tokens({ADMIN: "admin", READ: "read"}), mcp=False,
                      root_path="/tether/")
    async with httpx.AsyncClient(transport=Stripping(asgi),
                                 base_url="http://127.0.0.1/tether") as http, \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                              base_url="http://127.0.0.1") as raw:
        http.raw = raw  # type: ignore[attr-defined]
        http.app = app  # type: ignore[attr-defined]
        try:
            yield http
        finally:
            await app.close()


def addresses(html: str) -> list[str]:
    return [value for _, value in URL_ATTRIBUTE.findall(html)]


def assert_under_prefix(html: str) -> None:
    found = addresses(html)
    assert found
    wrong = [a for a in found if not a.startswith("/tether/")]
    assert not wrong, wrong


async def test_every_address_a_page_sends_out_carries_the_prefix(
        ui: httpx.AsyncClient) -> None:
    app = ui.app  # type: ignore[attr-defined]
    denied = await ui.get("/runs")
    assert denied.status_code == 303 and denied.headers["location"] == "/tether/login"
    login = await ui.get("/login")
    assert_under_prefix(login.text)
    assert 'action="/tether/login"' in login.text
    assert "Path=/tether/" in login.headers["set-cookie"]
    csrf = ui.cookies["tether_csrf"]
    r = await ui.post("/login", data={"token": ADMIN, "csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/tether/runs"
    assert "Path=/tether/;" in r.headers["set-cookie"]

    await app.start("wait_go", run_id="a/../victim")
    await app.start("parent", "ana", run_id="mom")
    await app.fork("a/../victim", at=0, new_run_id="victim-again")
    runs = await ui.get("/runs")
    assert_under_prefix(runs.text)
    assert 'href="/tether/runs/a%2F..%2Fvictim"' in runs.text
    assert 'fork of <a class="mono" href="/tether/runs/a%2F..%2Fvictim"' in runs.text
    assert 'href="/tether/static/app.css"' in runs.text
    assert 'data-refresh="/tether/ui/runs?"' in runs.text
    assert_under_prefix((await ui.get("/ui/runs")).text)
    run = await ui.get("/runs/a%2F..%2Fvictim")
    assert run.status_code == 200
    assert_under_prefix(run.text)
    assert 'data-events="/tether/api/v1/runs/a%2F..%2Fvictim/events"' in run.text
    assert 'action="/tether/ui/runs/a%2F..%2Fvictim/cancel"' in run.text
    for page in ("/approvals", "/schedules", "/runs?limit=1"):
        got = await ui.get(page)
        assert got.status_code == 200, page
        assert_under_prefix(got.text)
    older = (await ui.get("/runs?limit=1")).text
    assert 'href="/tether/runs?limit=1&amp;cursor=' in older

    # A form leads back under the prefix, and says what it did there (its cookie's
    # Path is the prefix too); a refused one's page links back under it.
    sent = await ui.post("/ui/runs/a%2F..%2Fvictim/signal",
                         data={"csrf": csrf, "name": "go", "data": "1"})
    assert sent.status_code == 303
    assert sent.headers["location"] == "/tether/runs/a%2F..%2Fvictim"
    assert "tether_flash=" in sent.headers["set-cookie"]
    assert "Path=/tether/" in sent.headers["set-cookie"]
    refused = await ui.post("/ui/runs/mom/signal", data={"csrf": csrf, "name": "x",
                                                         "data": "{not json"})
    assert refused.status_code == 400
    assert 'href="/tether/runs/mom">Back to the run' in refused.text
    out = await ui.post("/logout", data={"csrf": csrf})
    assert out.headers["location"] == "/tether/login"
    assert "Path=/tether/" in out.headers["set-cookie"]


async def test_routes_answer_with_the_prefix_stripped_or_still_on(
        ui: httpx.AsyncClient) -> None:
    """The proxy may strip the prefix (``proxy_pass http://127.0.0.1:8233/;``) or pass
    it on (``proxy_pass http://127.0.0.1:8233;``): both are served, the same way."""
    ui = ui.raw  # type: ignore[attr-defined]
    api = {"Authorization": f"Bearer {ADMIN}"}
    for path in ("/api/v1/runs", "/tether/api/v1/runs"):
        r = await ui.get(path, headers=api)
        assert r.status_code == 200 and r.json() == {"runs": [], "next_cursor": None}, path
    for path in ("/static/app.js", "/tether/static/app.js", "/healthz", "/tether/healthz"):
        assert (await ui.get(path)).status_code == 200, path
    assert (await ui.get("/tether/runs")).headers["location"] == "/tether/login"
    assert (await ui.get("/tether")).headers["location"] == "/tether/login"
    assert (await ui.get("/tether/runs/a%2Fb")).headers["location"] == \
        "/tether/login?next=%2Fruns%2Fa%252Fb"
    assert (await ui.get("/runs/a%2Fb")).headers["location"] == \
        "/tether/login?next=%2Fruns%2Fa%252Fb"
    # Only whole segments are the prefix; the machine faces still need a token.
    assert (await ui.get("/tetherx/api/v1/runs", headers=api)).status_code == 404
    assert (await ui.get("/tether/api/v1/runs")).status_code == 401
    spec = await ui.get("/tether/openapi.json", headers=api)
    assert spec.json()["servers"] == [{"url": "/tether"}]
    assert (await ui.get("/tether/metrics", headers=api)).status_code == 200
    # An id holding an encoded slash keeps it under the prefix.
    started = await ui.post("/tether/api/v1/runs", headers=api,
                            json={"workflow": "wait_go", "run_id": "x/journal"})
    assert started.status_code == 201
    doc = await ui.get("/tether/api/v1/runs/x%2Fjournal", headers=api)
    assert doc.status_code == 200 and doc.json()["run_id"] == "x/journal"


async def test_the_asgi_servers_root_path_is_honoured_too(sqlite_url: str) -> None:
    """``create_app(app)`` under an ASGI server given the root path itself (uvicorn
    ``--root-path``, which puts it in front of each path) names it in its addresses."""
    app = webapp.make_app(sqlite_url)
    await app._open()
    asgi = create_app(app, mcp=False)
    try:
        for server_path in ("/tether/runs", "/runs"):  # (httpx's transport does not prepend)
            transport = httpx.ASGITransport(app=asgi, root_path="/tether")
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://127.0.0.1") as http:
                page = await http.get(server_path)
                assert page.status_code == 200, server_path
                assert_under_prefix(page.text)
    finally:
        await app.close()


def test_a_root_path_is_a_path_the_server_can_tell_from_its_own() -> None:
    assert check_root_path("") == check_root_path("/") == ""
    assert check_root_path("/tether/") == "/tether"
    assert check_root_path("/ops/tether-1.x") == "/ops/tether-1.x"
    for bad in ("tether", "/a//b", "/a b", "/a/../b", "/é", "/a?b", "/a%2Fb"):
        with pytest.raises(ValueError):
            check_root_path(bad)
    with pytest.raises(ValueError, match="cannot start with /runs"):
        create_app(webapp.make_app("sqlite:///:memory:"), mcp=False, root_path="/runs")
    r = subprocess.run([sys.executable, "-m", "tether", "serve", "--db",
                        "sqlite:///:memory:", "--root-path", "/api/x"], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "tether: error: --root-path: the root path '/api/x' cannot start with /api: the "
        "server has addresses of its own there")
    assert document()["servers"] == [{"url": "/"}]


def test_every_address_in_templates_and_the_script_goes_through_the_root_path() -> None:
    """A page's addresses start with ``{{ root }}`` (the root path, "" when there is
    none): one written ``href="/runs"`` would leave the prefix behind a proxy and land
    on another application of the host. The script takes its addresses from the page
    (``data-refresh``, ``data-events``), never a literal ``"/..."``; and the server's
    redirects and cookies go through ``_ui._redirect`` / ``_cookie_path``."""
    found = []
    for page in sorted((SERVE / "templates").glob("*.html")):
        for n, line in enumerate(page.read_text().splitlines(), 1):
            for attribute, value in URL_ATTRIBUTE.findall(line):
                if not value.startswith(("{{ root }}", "#", "https://", "http://")):
                    found.append(f"{page.name}:{n}: {attribute}={value!r}")
            if re.search(r'\bdata-[\w-]+="/', line):
                found.append(f"{page.name}:{n}: {line.strip()}")
    script = (SERVE / "static" / "app.js").read_text()
    for n, line in enumerate(script.splitlines(), 1):
        if re.search(r"""["'`]/(?![/*])""", line):
            found.append(f"app.js:{n}: {line.strip()}")
    for module in sorted(SERVE.glob("*.py")):
        text = module.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"""RedirectResponse\(\s*f?["']/|path\s*=\s*["']/["']""", line):
                found.append(f"{module.name}:{n}: {line.strip()}")
    assert not found, found


# -- for real: a tether serve process behind a proxy, in Chromium --------------------------


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """``tether serve --root-path /tether`` with tokens, a worker, and the proxy that
    strips ``/tether``: (the UI's address through the proxy, the database, the fake
    LLM's address)."""
    from tests.web.test_sse import start_llm

    llm, base_url = start_llm(tmp_path, [
        {"tool_calls": [{"name": "buy_report", "arguments": {
            "title": "Durable agents 2025", "price_usd": 49.0}}],
         "input_tokens": 1250, "output_tokens": 38},
        {"text": "Bought the report: adoption of durable agents doubled in 2025.",
         "input_tokens": 1402, "output_tokens": 21},
    ])
    db = f"sqlite:///{tmp_path}/proxied.db"
    served = start_serve(db, tmp_path, tokens=f"admin:{ADMIN}\nread:{READ}\n", app=WEBAPP,
                         args=("--root-path", "/tether"))
    worker = start_worker(db, tmp_path, extra_env={"TETHER_TEST_LLM_URL": base_url})
    port = free_port()
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proxy = forked.Popen([sys.executable, "-m", "tests.web.prefix_proxy", "--port",
                              str(port), "--upstream", served.url, "--prefix", "/tether"],
                             cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/tether"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proxy.poll() is None, log.read_text()
            time.sleep(0.1)
        yield url, db, base_url
    finally:
        proxy.terminate()
        proxy.wait(10)
        worker.terminate()
        worker.wait(10)
        served.stop()
        llm.terminate()
        llm.wait(10)
        if llm.stdout is not None:
            llm.stdout.close()


def _wait_status(url: str, run_id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    doc: dict[str, object] = {}
    while time.monotonic() < deadline:
        doc = httpx.get(f"{url}/api/v1/runs/{run_id}",
                        headers={"Authorization": f"Bearer {ADMIN}"}).json()
        if doc.get("status") == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not become {status}: {doc}")


@pytest.mark.slow
def test_the_ui_api_and_mcp_through_a_proxy_that_strips_the_prefix(
        browser: object, proxied: tuple[str, str, str], tmp_path: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    url, _, _ = proxied
    api = {"Authorization": f"Bearer {ADMIN}"}
    for workflow, run_id, args in (("parent", "greet-family", ["ana"]),
                                   ("shopper", "shopper-7f3a",
                                    ["Buy the report 'Durable agents 2025'."])):
        r = httpx.post(url + "/api/v1/runs", headers=api,
                       json={"workflow": workflow, "input": args, "run_id": run_id})
        assert r.status_code == 201, r.text
    _wait_status(url, "greet-family", "completed")
    _wait_status(url, "shopper-7f3a", "waiting")

    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.goto(url + "/runs")
    expect(page).to_have_url(url + "/login")
    page.fill("input[name=token]", ADMIN)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(url + "/runs")
    assert {c["name"]: c["path"] for c in context.cookies()} == {
        "tether_session": "/tether/", "tether_csrf": "/tether/"}
    expect(page.locator("tr", has_text="shopper-7f3a")).to_contain_text("needs approval")
    page.screenshot(path=str(tmp_path / "proxied-runs.png"), full_page=True)
    # The stylesheet came through the proxy (without it the header is not a flex row).
    assert page.evaluate("getComputedStyle(document.querySelector('header.top'))"
                         ".display") == "flex"

    page.click("a:has-text('shopper-7f3a')")
    expect(page).to_have_url(url + "/runs/shopper-7f3a")
    expect(page.locator("#run-status")).to_have_text("waiting")
    page.evaluate("window.__notReloaded = true")

    inbox = context.new_page()
    inbox.goto(url + "/approvals")
    card = inbox.locator(".approval", has_text="shopper-7f3a")
    expect(card).to_contain_text("buy_report")
    inbox.screenshot(path=str(tmp_path / "proxied-approvals.png"), full_page=True)
    card.locator("button.approve").click()
    expect(inbox).to_have_url(url + "/approvals")
    expect(inbox.locator(".flash")).to_contain_text("Approved buy_report")
    # The run page follows its event stream through the proxy: it finishes unreloaded.
    expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
    assert page.evaluate("window.__notReloaded") is True
    expect(page.locator(".result")).to_contain_text("adoption of durable agents doubled")
    page.screenshot(path=str(tmp_path / "proxied-run.png"), full_page=True)

    page.goto(url + "/runs/greet-family")
    child = page.locator(".tree a").first
    child_id = child.inner_text()
    child.click()
    expect(page).to_have_url(re.compile(re.escape(url + "/runs/greet-family")
                                        + r"[^/]+$"))
    expect(page.locator(".run-head")).to_contain_text(child_id)
    expect(page.locator(".run-head")).to_contain_text("child of")
    # The page's own script reads the API with the session cookie, under the prefix.
    listed = page.evaluate("fetch('/tether/api/v1/runs').then(r => r.json())")
    assert {r["run_id"] for r in listed["runs"]} >= {"greet-family", "shopper-7f3a"}
    context.close()

    metrics = httpx.get(url + "/metrics", headers=api)
    assert metrics.status_code == 200 and 'tether_runs{status="completed"}' in metrics.text
    runs = httpx.get(url + "/api/v1/runs", headers=api)
    assert runs.status_code == 200 and len(runs.json()["runs"]) >= 2
    assert httpx.get(url + "/openapi.json", headers=api).json()["servers"] == [
        {"url": "/tether"}]

    # An MCP client at /tether/mcp, through the proxy: it lists the tools and calls one.
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def mcp_call() -> tuple[list[str], str]:
        async with httpx2.AsyncClient(headers=api) as http, Client(
                streamable_http_client(url + "/mcp", http_client=http)) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool("greet", {"name": "proxy"})
            return tools, result.content[0].text  # type: ignore[union-attr]

    with ThreadPoolExecutor(1) as pool:  # (Playwright's loop runs in this thread)
        tools, text = pool.submit(asyncio.run, mcp_call()).result(60)
    assert "greet" in tools
    assert text == "hello proxy"


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    from tests.web.test_browser import CHROMIUM

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
