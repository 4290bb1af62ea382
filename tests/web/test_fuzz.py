"""A schema-driven fuzz of the API from its own OpenAPI document (schemathesis) against
a real ``tether serve`` process: whatever the input, no 5xx, and every API error is the
JSON error shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
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
    response = case.call(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"},
                         timeout=10)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
