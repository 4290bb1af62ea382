"""An app whose payloads may hold 1000 bytes at most (``App(max_payload=1000)``), for
``tether serve --app`` in tests of payloads over the limit; ``build`` makes one with a
payload hook (the same workflows) for runs whose payloads are encrypted."""

from __future__ import annotations

from typing import Any

import tether

MAX_PAYLOAD = 1000


def build(url: str | None = None, payload_hook: Any = None) -> tether.App:
    app = tether.App(url, max_payload=MAX_PAYLOAD, payload_hook=payload_hook)

    @app.workflow
    async def waiter(tag: str) -> Any:
        return await tether.wait_for_signal("go")

    return app


app = build()
