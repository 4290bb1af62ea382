"""Fixtures of the process tests: real ``tether worker`` processes on the test's store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.life.procs import Workers


@pytest.fixture
async def workers(store_url: str, tmp_path: Path) -> AsyncIterator[Workers]:
    """Starts worker processes on ``store_url``; every one it started is stopped after."""
    w = Workers(store_url, tmp_path)
    try:
        yield w
    finally:
        w.stop_all()
