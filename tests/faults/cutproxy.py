"""A TCP proxy in front of PostgreSQL that cuts every connection when the client sends a
chosen write, and refuses connections until told the server is back.

It runs in a thread with an event loop of its own: a worker's lone journal append blocks
its event loop while it waits for the answer (``PostgresStore._append_inline``), and a
proxy on that loop could not pass the answer on meanwhile.

Armed with a marker (bytes the client will send: a step's result, which is in its
journal append and nowhere before it), the proxy cuts when a client message holding the
marker comes (the connections reset, not closed politely), in one of three ways:

- ``"before"``: the message is dropped: the server never sees the write;
- ``"after"``: the message goes to the server, whose answer (up to its ReadyForQuery:
  the implicit transaction committed) is read and dropped: the write committed and the
  client cannot know it;
- ``"hold"``: a network cut the server does not see: the message is kept back and the
  client's side reset, while the server's side stays connected, its session alive
  (as after a partition, with the write still in flight or unread in the server's
  socket): the message and what follows it up to the next Sync (a pipeline's COMMIT).
  ``release()`` then sends the message on, as a late packet would be, and
  ``settled`` is set once the server answered it or that connection ended.

Then (``"before"``, ``"after"``) it accepts and resets every new connection (the server
is gone) until ``back()``; after a ``"hold"`` new connections pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

#: The server's ReadyForQuery message (its status byte follows): the end of an answer.
_READY = b"Z\x00\x00\x00\x05"
#: The client's Sync message: the end of a statement's or a pipeline's messages.
_SYNC = b"S\x00\x00\x00\x04"

Mode = Literal["before", "after", "hold"]


class CuttingProxy:
    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target_url = target_url
        self.host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 5432
        self.port = 0
        self.down = False
        #: Set (from the proxy's thread) once the armed cut happened.
        self.cut = threading.Event()
        #: Whether the server answered the write before the cut (mode "after").
        self.answered = False
        self.refused = 0  # connections refused while down
        #: Set once a held message was answered, or its connection ended (``"hold"``).
        self.settled = threading.Event()
        self._release: asyncio.Event | None = None
        self._marker: bytes | None = None
        self._mode: Mode = "before"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="cutting-proxy")
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.Transport] = set()

    def start(self) -> CuttingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def url(self) -> str:
        parts = urlsplit(self.target_url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def arm(self, marker: bytes, mode: Mode) -> None:
        """Cut at the next client message holding ``marker`` (once)."""
        def set_() -> None:
            self._marker, self._mode = marker, mode
        self._loop.call_soon_threadsafe(set_)

    def release(self) -> None:
        """Send the message held (``"hold"``) on to the server, if its session is still
        there (``settled`` tells when that is over)."""
        def go() -> None:
            if self._release is not None:
                self._release.set()
        self._loop.call_soon_threadsafe(go)

    def go_down(self) -> None:
        """Cut every connection now and refuse new ones (the server is gone)."""
        self._loop.call_soon_threadsafe(self._cut_all)

    def back(self) -> None:
        """Accept connections again (the server is back)."""
        def up() -> None:
            self.down = False
        self._loop.call_soon_threadsafe(up)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._transports):
                t.abort()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _cut_all(self) -> None:
        self.down = True
        for t in list(self._transports):
            t.abort()  # RST, not a polite FIN
        self._transports.clear()

    async def _serve(self, c_reader: asyncio.StreamReader,
                     c_writer: asyncio.StreamWriter) -> None:
        c_transport = c_writer.transport
        if self.down:
            self.refused += 1
            c_transport.abort()  # type: ignore[attr-defined]
            return
        try:
            s_reader, s_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            c_transport.abort()  # type: ignore[attr-defined]
            return
        s_transport = s_writer.transport
        self._transports |= {c_transport, s_transport}  # type: ignore[arg-type]
        muted = held = False
        answer = bytearray()
        answered = asyncio.Event()

        async def client_to_server() -> None:
            nonlocal muted
            tail = b""
            while True:
                data = await c_reader.read(65536)
                if not data:
                    return
                marker = self._marker
                if marker is not None and marker in tail + data:
                    self._marker = None
                    if self._mode == "hold":
                        await hold(data)
                        return
                    if self._mode == "before":
                        self._cut_all()
                        self.cut.set()
                        return
                    muted = True  # the server's answer to this goes nowhere
                    s_writer.write(data)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(answered.wait(), 5.0)
                    self.answered = answered.is_set()
                    self._cut_all()
                    self.cut.set()
                    return
                tail = data[-256:]
                s_writer.write(data)

        async def hold(data: bytes) -> None:
            nonlocal muted, held
            muted = held = True
            kept = bytearray(data)
            while _SYNC not in kept:  # (a pipeline's COMMIT, its Sync: what follows it)
                more = await c_reader.read(65536)
                if not more:
                    break
                kept += more
            c_transport.abort()  # type: ignore[attr-defined]
            self._release = asyncio.Event()
            self.cut.set()
            await self._release.wait()
            answer.clear()
            s_writer.write(bytes(kept))
            with contextlib.suppress(Exception):
                await s_writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), 10.0)
            self.answered = answered.is_set()

        async def server_to_client() -> None:
            while True:
                data = await s_reader.read(65536)
                if not data:
                    return
                if muted:
                    answer.extend(data)
                    if _READY in answer:
                        answered.set()
                    continue
                c_writer.write(data)

        tasks = [asyncio.ensure_future(client_to_server()),
                 asyncio.ensure_future(server_to_client())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in (c_transport, s_transport):
            t.abort()  # type: ignore[attr-defined]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._transports -= {c_transport, s_transport}  # type: ignore[arg-type]
        if held:
            self.settled.set()
