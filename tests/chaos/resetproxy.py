"""A TCP proxy in front of PostgreSQL that resets connections: at random, and right
after passing on a client message that holds ``COMMIT`` but before the server's reply
can come back (an ambiguous commit: the transaction may have committed, the client
cannot know)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from urllib.parse import urlsplit, urlunsplit


class ResettingProxy:
    def __init__(self, target_url: str, *, seed: int = 5, reset_p: float = 0.002,
                 ambiguous_p: float = 0.05) -> None:
        parts = urlsplit(target_url)
        self.target_url = target_url
        self.host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 5432
        self.rng = random.Random(seed)
        self.reset_p = reset_p
        self.ambiguous_p = ambiguous_p
        self.resets = 0
        self.ambiguous_commits = 0
        self.connections = 0
        self.enabled = True
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> ResettingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self) -> str:
        parts = urlsplit(self.target_url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()

    async def _serve(self, c_reader: asyncio.StreamReader,
                     c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            s_reader, s_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            c_writer.close()
            return
        self._writers |= {c_writer, s_writer}
        dead = asyncio.Event()

        def cut() -> None:
            dead.set()
            for w in (c_writer, s_writer):
                w.transport.abort()  # RST, not a polite FIN

        async def client_to_server() -> None:
            while not dead.is_set():
                data = await c_reader.read(65536)
                if not data:
                    break
                s_writer.write(data)
                if self.enabled and b"COMMIT" in data and self.rng.random() < self.ambiguous_p:
                    await s_writer.drain()
                    await asyncio.sleep(0.05)  # the server commits; its reply is dropped
                    self.ambiguous_commits += 1
                    cut()
                    return
                if self.enabled and self.rng.random() < self.reset_p:
                    self.resets += 1
                    cut()
                    return

        async def server_to_client() -> None:
            while not dead.is_set():
                data = await s_reader.read(65536)
                if not data or dead.is_set():
                    break
                c_writer.write(data)

        # Whichever side ends first ends both, as a real connection would: a server
        # that closed (a restart) must reach the client, not leave it waiting for a
        # reply that cannot come.
        tasks = [asyncio.ensure_future(client_to_server()),
                 asyncio.ensure_future(server_to_client())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        cut()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._writers -= {c_writer, s_writer}
