"""The statuses the OpenAPI document lists for a start and a fork are the ones a real
``tether serve`` answers, with and without ``--app``: each is met by a real request,
and none other is answered. (The document listed a 404 ``workflow_not_found`` for a
start that no start answered: a workflow nothing registered is queued.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, READ, WEBAPP, serving

pytestmark = pytest.mark.slow

#: Statuses no request of a client can call up against a healthy server: a bug (500),
#: the store gone or the connection limit (503), a client too slow (408).
_NOT_CALLED_UP = {"408", "500", "503"}
_JSON = {"Content-Type": "application/json"}


@pytest.fixture(params=[WEBAPP, None], ids=["with-app", "without-app"])
def http(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[httpx.Client]:
    with serving(f"sqlite:///{tmp_path}/s.db", tmp_path, app=request.param,
                 tokens=f"admin:{ADMIN}\nread:{READ}\n",
                 args=("--max-body", "4096")) as served, \
            httpx.Client(base_url=served.url, timeout=30,
                         headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        client.with_app = request.param is not None  # type: ignore[attr-defined]
        yield client


def _answers(http: httpx.Client, path: str, cases: list[tuple[str, dict[str, object]]]
             ) -> dict[str, set[str]]:
    """``{status: {case, ...}}`` of each request ``(case, httpx kwargs)`` to ``path``."""
    seen: dict[str, set[str]] = {}
    for case, kwargs in cases:
        r = http.post(path, **kwargs)  # type: ignore[arg-type]
        if r.status_code >= 400:
            assert set(r.json()) == {"error"}, (case, r.text)
        seen.setdefault(str(r.status_code), set()).add(case)
    return seen


def test_a_starts_and_a_forks_documented_statuses_are_what_they_answer(
        http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()["paths"]
    with_app = http.with_app  # type: ignore[attr-defined]
    big = "x" * 5000
    start = _answers(http, "/api/v1/runs", [
        ("new", {"json": {"workflow": "greet", "input": ["a"], "run_id": "g"}}),
        ("again", {"json": {"workflow": "greet", "input": ["a"], "run_id": "g"}}),
        ("unregistered", {"json": {"workflow": "no_such_workflow", "run_id": "u"}}),
        ("blank", {"json": {"workflow": " "}}),
        ("misfit", {"json": {"workflow": "greet", "input": ["a", "b"], "run_id": "m"}}),
        ("malformed", {"content": b"{", "headers": _JSON}),
        ("other-workflow", {"json": {"workflow": "wait_go", "run_id": "g"}}),
        ("too-large", {"json": {"workflow": "greet", "input": [big]}}),
        ("not-json", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}),
        ("no-token", {"json": {"workflow": "greet"},
                      "headers": {"Authorization": ""}}),
        ("read-token", {"json": {"workflow": "greet"},
                        "headers": {"Authorization": f"Bearer {READ}"}}),
    ])
    assert "unregistered" in start["201"], start  # never a 404, --app or not
    # The workflow's code is known with --app only: without it, the run is queued.
    assert ("misfit" in start["400"]) == with_app, start
    fork = _answers(http, "/api/v1/runs/g/fork", [
        ("new", {"json": {"at": 0, "run_id": "f"}}),
        ("same-fork-again", {"json": {"at": 0, "run_id": "f"}}),
        ("id-in-use", {"json": {"at": 0, "run_id": "g"}}),
        ("past-the-end", {"json": {"at": 5}}),
        ("input-no-array", {"json": {"at": 0, "input": "a"}}),
        ("misfit", {"json": {"at": 0, "input": ["a", "b"], "run_id": "f2"}}),
        ("too-large", {"json": {"at": 0, "input": [big]}}),
        ("not-json", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}),
        ("no-token", {"json": {"at": 0}, "headers": {"Authorization": ""}}),
        ("read-token", {"json": {"at": 0}, "headers": {"Authorization": f"Bearer {READ}"}}),
    ])
    fork.update({k: fork.get(k, set()) | v for k, v in _answers(
        http, "/api/v1/runs/nope/fork", [("no-run", {"json": {"at": 0}})]).items()})
    assert ("misfit" in fork["400"]) == with_app, fork
    assert fork["200"] == {"same-fork-again"} and "id-in-use" in fork["409"], fork
    for path, seen in (("/api/v1/runs", start), ("/api/v1/runs/{run_id}/fork", fork)):
        documented = set(doc[path]["post"]["responses"])
        assert set(seen) <= documented, (path, seen, documented)
        assert documented - _NOT_CALLED_UP <= set(seen), (path, seen, documented)


def test_every_reads_refusal_of_a_query_parameter_is_documented(http: httpx.Client) -> None:
    """Every GET of the document answers a query parameter it does not list with a 400
    (a misspelt filter: a run's document, its journal and the schedules answered 200,
    the parameter dropped), which its operation lists; the cache-buster ``_`` each
    lists is taken (200)."""
    http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "w"})
    assert http.post("/api/v1/runs/w/cancel").json()["status"] == "cancelled"  # (its
    # event stream closes)
    doc = http.get("/openapi.json").json()["paths"]
    reads = {path: ops["get"] for path, ops in doc.items() if "get" in ops}
    assert len(reads) == 8
    for path, op in reads.items():
        url = path.replace("{run_id}", "w")
        listed = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        assert "_" in listed and "stauts" not in listed, path
        typo = http.get(url, params={"stauts": "failed"})
        assert typo.status_code == 400 and set(typo.json()) == {"error"}, (path, typo.text)
        assert "stauts" in typo.json()["error"]["message"]
        busted = http.get(url, params={"_": "1733000000000"})
        assert busted.status_code == 200, (path, busted.text)
        assert {"400", "200"} <= set(op["responses"]), path
