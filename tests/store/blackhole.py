"""A TCP proxy in front of PostgreSQL that goes silent on cue.

``silence()``: the proxy keeps accepting connections and holding those it has, but
forwards no byte either way — a server that hangs (a stopped process, stuck storage),
a partition or a firewall that drops packets: the client's kernel still gets every
segment acknowledged (by the proxy's), so neither TCP keepalives nor
``tcp_user_timeout`` fire, and a client without deadlines waits for ever.

``heal()``: connections made from then on are forwarded again. Those held through the
silence stay silent for ever (half-open: what they led to is gone, as after a
partition behind which the server restarted or a NAT forgot them), unless
``heal(resume_held=True)``, which lets them go on where they stopped, what was sent
meanwhile delivered (a stopped server continued).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class _Link:
    """One client connection: forwarded while ``flowing`` is set."""

    def __init__(self, flowing: bool) -> None:
        self.flowing = asyncio.Event()
        if flowing:
            self.flowing.set()


class BlackHoleProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.silent = False
        self.accepted = 0  #: connections accepted, ever
        self.port = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> BlackHoleProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, url: str) -> str:
        """``url`` pointed at this proxy."""
        parts = urlsplit(url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def silence(self) -> None:
        """Forward nothing more, on any connection, old or new."""
        self.silent = True
        for link in self._links:
            link.flowing.clear()

    def heal(self, *, resume_held: bool = False) -> None:
        """Forward new connections again (and, with ``resume_held``, the held ones)."""
        self.silent = False
        if resume_held:
            for link in self._links:
                link.flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        for w in self._writers:
            w.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self._writers.append(writer)
        link = _Link(flowing=not self.silent)
        self._links.add(link)
        try:
            await link.flowing.wait()  # (no connection to the server while silent)
            up_r, up_w = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.append(up_w)
            await asyncio.gather(self._pump(reader, up_w, link),
                                 self._pump(up_r, writer, link))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._links.discard(link)
            self._tasks.discard(task)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    link: _Link) -> None:
        try:
            while True:
                data = await src.read(65536)
                await link.flowing.wait()  # held (with the end of the stream) while silent
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()
