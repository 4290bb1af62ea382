"""The web tests' own helpers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.web import helpers


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_serve_whose_chosen_port_was_taken_meanwhile_starts_on_another(
        sqlite_url: str, tmp_path: Path, taken_port: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``start_serve`` picks a free port, which any process may take before the server
    binds it ("address already in use": seen in a stress run of
    tests/ai/test_interrupt.py); it starts the server again on another port."""
    ports = iter([taken_port])
    real = helpers.free_port
    monkeypatch.setattr(helpers, "free_port", lambda: next(ports, None) or real())
    served = helpers.start_serve(sqlite_url, tmp_path, app=None)
    try:
        assert not served.url.endswith(f":{taken_port}")
        assert httpx.get(served.url + "/healthz", timeout=10).status_code == 200
    finally:
        served.stop()
