"""An app whose ``App(...)`` names its own store (``TETHER_TEST_APP_DB``), for
``tether serve --app`` without ``--db`` (loaded by subprocesses by name:
``tests.mcp_server.own_store_app:app``)."""

from __future__ import annotations

import os

from tether import App

app = App(os.environ["TETHER_TEST_APP_DB"])


@app.workflow(mcp=True)
async def echo(text: str) -> str:
    """Say it back."""
    return text
