"""A TCP proxy in front of PostgreSQL that counts round trips.

A round trip is a point where the client asks the server to answer what it sent so far
and waits: a ``Sync`` or ``Flush`` of the extended protocol (a Flush right after a Sync
adds no wait), or a simple ``Query``. The
proxy parses the client's side of the wire protocol and counts those messages; a
pipeline that sends ten statements and one ``Sync`` costs one. Connection start-up is
not counted. Used by the round-trip tests and ``bench/pg_store.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class RoundTripProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.round_trips = 0
        self.connections = 0  # ever accepted
        self.open = 0  # accepted and not yet closed by either side
        self.trace: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, port: int = 0) -> RoundTripProxy:
        """Listen on ``port`` (0: any free one), e.g. the port of a proxy that was closed,
        to bring "the server" back at the same address."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, url: str) -> str:
        """``url`` pointed at this proxy."""
        parts = urlsplit(url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def reset(self) -> None:
        self.round_trips = 0

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            await self._carry(reader, writer)
        finally:
            self.open -= 1

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(self.target_host, self.target_port)
        buf = bytearray()
        started = [False]
        last = [""]

        def count(data: bytes) -> None:
            buf.extend(data)
            while True:
                if not started[0]:  # untyped start-up packets: SSLRequest, StartupMessage
                    if len(buf) < 8:
                        return
                    size = int.from_bytes(buf[0:4], "big")
                    code = int.from_bytes(buf[4:8], "big")
                    if len(buf) < size:
                        return
                    del buf[:size]
                    if code not in (80877103, 80877104):  # SSL / GSS encryption requests
                        started[0] = True
                    continue
                if len(buf) < 5:
                    return
                size = int.from_bytes(buf[1:5], "big")
                if len(buf) < 1 + size:
                    return
                kind = buf[0:1].decode()
                self.trace.append(kind)
                # psycopg ends a pipeline with Sync + Flush in one write: one wait.
                if kind in "SQ" or (kind == "H" and last[0] != "S"):
                    self.round_trips += 1
                last[0] = kind
                del buf[:1 + size]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       from_client: bool) -> None:
            try:
                while data := await src.read(65536):
                    if from_client:
                        count(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        tasks = [asyncio.create_task(pump(reader, up_w, True)),
                 asyncio.create_task(pump(up_r, writer, False))]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks)
        finally:
            self._tasks.difference_update(tasks)
