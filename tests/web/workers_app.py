"""``create_app`` served by a multi-process ASGI server (``uvicorn --workers N``,
gunicorn with uvicorn's worker), as docs/serve.md shows: ``asgi`` (made at import, in
each process) and ``factory`` (``uvicorn --factory``), over the test workflows' App on
``$TETHER_DATABASE_URL``, with the tokens of ``$TETHER_TEST_TOKEN_FILE`` and the
``metrics_interval`` of ``$TETHER_TEST_METRICS_INTERVAL``. Every answer names the
process that gave it (``X-Test-Pid``), for the tests to see each process answer."""

from __future__ import annotations

import os

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.web import webapp
from tether.serve import DEFAULT_METRICS_INTERVAL, Tokens, create_app


def factory() -> ASGIApp:
    token_file = os.environ.get("TETHER_TEST_TOKEN_FILE")
    inner = create_app(
        webapp.make_app(os.environ["TETHER_DATABASE_URL"]),
        tokens=Tokens.load(token_file) if token_file else None,
        metrics_interval=float(os.environ.get("TETHER_TEST_METRICS_INTERVAL",
                                              DEFAULT_METRICS_INTERVAL)))
    pid = str(os.getpid()).encode()

    async def named(scope: Scope, receive: Receive, send: Send) -> None:
        async def naming(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                headers.raw.append((b"x-test-pid", pid))
                message = {**message, "headers": headers.raw}
            await send(message)

        await inner(scope, receive, naming if scope["type"] == "http" else send)

    return named


asgi = factory()
