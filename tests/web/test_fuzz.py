"""A schema-driven fuzz of the API from its own OpenAPI document (schemathesis) against
a real ``tether serve`` process: whatever the input, no 5xx, and every API error is the
JSON error shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from tests.web.helpers import ADMIN, READ, Served, start_serve
from tether.serve._openapi import document

schema = schemathesis.openapi.from_dict(document())

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fuzz")
    served = start_serve(f"sqlite:///{tmp}/fuzz.db", tmp,
                         tokens=f"admin:{ADMIN}\nread:{READ}\n")
    try:
        yield served
    finally:
        served.stop()


@schema.parametrize()
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, server: Served) -> None:
    # Sent with requests' stream=True: the events of a run that the fuzz started earlier
    # (an SSE stream that stays open while the run lives) answer with their status and
    # headers, and the stream's body is not waited for; any other body is read whole.
    kwargs = case.as_transport_kwargs(base_url=server.url,
                                      headers={"Authorization": f"Bearer {ADMIN}"})
    with requests.request(**kwargs, timeout=10, stream=True) as response:
        where = (case.method, case.formatted_path)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            assert response.status_code == 200, where
            return
        assert response.status_code < 500, (*where, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
