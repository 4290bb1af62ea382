"""A reverse proxy for the tests, as an operator puts one in front of ``tether serve``:
it publishes the upstream under a path prefix and strips it (nginx ``location /tether/
{ proxy_pass http://127.0.0.1:8233/; }``, Traefik's StripPrefix), sets ``Host`` to the
upstream's (nginx's default), adds ``X-Forwarded-*``, and streams answers as they come
(Server-Sent Events, MCP). Everything outside the prefix is a 404 of the proxy's own.

    python -m tests.web.prefix_proxy --port 8080 --upstream http://127.0.0.1:8233 \
        --prefix /tether
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import httpx
import uvicorn
from starlette.types import Message, Receive, Scope, Send

#: Headers of one connection (RFC 9110 7.6.1), not passed on either way.
HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
       b"transfer-encoding", b"upgrade", b"host", b"content-length"}


class StripPrefix:
    """The proxy as an ASGI application (served by uvicorn)."""

    def __init__(self, upstream: str, prefix: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.prefix = prefix.rstrip("/").encode()
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                self.client = httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))
                await send({"type": "lifespan.startup.complete"})
            if self.client is not None:
                await self.client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.client is not None
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        if not raw.startswith(self.prefix + b"/"):
            await _answer(send, 404, b"not under the proxy's prefix\n")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        host = dict(scope["headers"]).get(b"host", b"").decode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP]
        headers += [(b"x-forwarded-host", host.encode()), (b"x-forwarded-proto", b"http"),
                    (b"x-forwarded-for", scope["client"][0].encode()),
                    (b"x-forwarded-prefix", self.prefix)]
        url = self.upstream + raw[len(self.prefix):].decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        request = self.client.build_request(scope["method"], url, headers=headers,
                                            content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError:
            await _answer(send, 502, b"upstream unreachable\n")
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw
                                    if k.lower() not in HOP]})
            # Stream the answer until it ends or the client goes (an event stream
            # never ends by itself).
            gone = asyncio.ensure_future(_disconnected(receive))
            chunks = response.aiter_raw().__aiter__()
            while True:
                next_chunk = asyncio.ensure_future(chunks.__anext__())
                await asyncio.wait({next_chunk, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not next_chunk.done():
                    next_chunk.cancel()
                    with contextlib.suppress(BaseException):
                        await next_chunk
                    return
                try:
                    chunk = next_chunk.result()
                except StopAsyncIteration:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            gone.cancel()
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


async def _disconnected(receive: Receive) -> None:
    message: Message = {}
    while message.get("type") != "http.disconnect":
        message = await receive()


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--prefix", default="/tether")
    args = parser.parse_args()
    uvicorn.run(StripPrefix(args.upstream, args.prefix), host="127.0.0.1", port=args.port,
                log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
