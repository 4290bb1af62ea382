"""A route asked for with a trailing slash (``/runs/``, ``/api/v1/approvals/``) is
redirected (307: the method and body are kept) to the route without it, under the root
path and with the query string, for pages and the API alike. Until 2026-12-06
``/runs/`` answered 404 (the run of id "") while ``/api/v1/approvals/`` was redirected
by Starlette to an absolute address made from the request's Host. A path with a
parameter keeps its slash: ``/runs/a/`` is the run ``a/``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.web import webapp
from tests.web.helpers import ADMIN, READ
from tether.serve import Tokens, create_app

#: Every route without a parameter, each with a trailing slash, by method.
GETS = ["/runs/", "/approvals/", "/schedules/", "/login/", "/healthz/", "/metrics/",
        "/openapi.json/", "/ui/runs/", "/ui/approvals/", "/api/v1/runs/",
        "/api/v1/approvals/", "/api/v1/schedules/", "/api/v1/workers/", "/api/v1/queues/"]
#: The routes without a parameter that take only a POST.
POSTS = ["/logout/"]


@pytest.fixture(params=["", "/tether"])
async def client(sqlite_url: str, request: pytest.FixtureRequest
                 ) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client of a server with tokens, under no root path and under ``/tether`` (the
    proxy passing the prefix on); the root path."""
    root = request.param
    app = webapp.make_app(sqlite_url)
    await app._open()
    asgi = create_app(app, tokens=Tokens({ADMIN: "admin", READ: "read"}), mcp=False,
                      root_path=root)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1") as http:
            yield http, root
    finally:
        await app.close()


def _routes_of(asgi_paths: list[str]) -> list[str]:
    from starlette.routing import Route

    from tether.serve import _api, _control, _ui

    fixed = {r.path for r in [*_api.routes, *_control.routes, *_ui.routes]
             if isinstance(r, Route) and "{" not in r.path and r.path != "/"}
    return sorted(fixed - {p.rstrip("/") for p in asgi_paths})


def test_the_list_covers_every_route_without_a_parameter() -> None:
    assert _routes_of(GETS + POSTS) == [], "add them to GETS or POSTS"


async def test_a_route_with_a_trailing_slash_is_redirected_to_it(
        client: tuple[httpx.AsyncClient, str]) -> None:
    http, root = client
    for path in GETS:
        r = await http.get(root + path + "?status=ok&x=1",
                           headers={"Authorization": f"Bearer {READ}"})
        assert r.status_code == 307, (path, r.status_code, r.text)
        assert r.headers["location"] == f"{root}{path[:-1]}?status=ok&x=1", path
        followed = await http.get(r.headers["location"],
                                  headers={"Authorization": f"Bearer {READ}"})
        assert followed.status_code != 404, (path, followed.text)
    r = await http.get(f"{root}/runs//")
    assert r.status_code == 307 and r.headers["location"] == f"{root}/runs"


async def test_a_post_with_a_trailing_slash_is_redirected_keeping_its_method(
        client: tuple[httpx.AsyncClient, str]) -> None:
    """307, not 301/302/303: a client that follows it sends the POST again, its body
    with it (httpx, curl -L, requests)."""
    http, root = client
    auth = {"Authorization": f"Bearer {ADMIN}"}
    body = {"workflow": "hello", "input": ["x"], "run_id": "slashed"}
    r = await http.post(f"{root}/api/v1/runs/", json=body, headers=auth)
    assert r.status_code == 307 and r.headers["location"] == f"{root}/api/v1/runs", r.text
    followed = await http.post(f"{root}/api/v1/runs/", json=body, headers=auth,
                               follow_redirects=True)
    assert [h.status_code for h in followed.history] == [307]
    assert followed.status_code == 201 and followed.json()["run_id"] == "slashed", \
        followed.text


async def test_a_path_with_a_parameter_keeps_its_slash(
        client: tuple[httpx.AsyncClient, str]) -> None:
    """``/runs/a/`` names the run ``a/``: it is not redirected to the run ``a``."""
    http, root = client
    auth = {"Authorization": f"Bearer {READ}"}
    r = await http.get(f"{root}/api/v1/runs/no-such-run/", headers=auth)
    assert r.status_code == 404 and "location" not in r.headers, r.text
    assert "no-such-run/" in r.text
