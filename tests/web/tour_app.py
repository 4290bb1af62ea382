"""The workflows the curl tour of docs/serve.md names (``tests.web.tour_app:app``)."""

from __future__ import annotations

import tether

app = tether.App()


@app.workflow
async def greet(name: str) -> str:
    return f"hello {name}"


@app.workflow
async def order() -> object:
    return await tether.wait_for_signal("approve")
