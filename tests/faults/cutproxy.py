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

``SyncHoldingProxy`` holds a pipeline's moment instead: it passes BEGIN, the statements
and COMMIT and keeps the Sync back while the test ends the session
(``end_after_commit``). The helpers after it are the tests' shared scaffolding: a proxy
for a test's span (``cutting_proxy``), a store on one connection (``one_connection``),
an App on the server directly (``direct_app``), and waits (``wait_for``, ``run_ended``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tether import App
from tether.store.postgres import PostgresStore

#: The server's ReadyForQuery message (its status byte follows): the end of an answer.
_READY = b"Z\x00\x00\x00\x05"
#: The client's Sync message: the end of a statement's or a pipeline's messages.
_SYNC = b"S\x00\x00\x00\x04"

Mode = Literal["before", "after", "hold"]
T = TypeVar("T")


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

    async def wait_cut(self, timeout: float = 20.0) -> None:
        """Wait until the armed cut happened (the marked write went out)."""
        if not await asyncio.to_thread(self.cut.wait, timeout):
            raise AssertionError("the marked write never went out")

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


class SyncHoldingProxy:
    """A TCP proxy to PostgreSQL, in a thread with its own event loop. Once ``arm()``ed,
    the next client message stream holding a Sync is passed on up to it, and it and
    what follows kept back (``held`` is set then); the server's bytes and the end of
    its stream pass as they come."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target_url = target_url
        self.host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 5432
        self.port = 0
        self.held = threading.Event()
        self._armed = False
        self._writers: list[asyncio.StreamWriter] = []
        self._sockets: list[socket.socket] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="sync-holding-proxy")
        self._server: asyncio.Server | None = None

    def start(self) -> SyncHoldingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def url(self) -> str:
        parts = urlsplit(self.target_url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def arm(self) -> None:
        def set_() -> None:
            self._armed = True
        self._loop.call_soon_threadsafe(set_)

    async def end_after_commit(self, pg_url: str, store: PostgresStore,
                               write: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Start ``write()`` on ``store`` (one connection, through this proxy), keep its
        pipeline's Sync back, and end its session (``pg_url``: the server directly)
        once the COMMIT ran: the commit went unanswered. The write's future, which the
        caller awaits for its outcome."""
        pid = await backend_pid(store)
        self.held.clear()
        self.arm()
        op = asyncio.ensure_future(write())
        await wait_for(self.held, "the pipeline's Sync")
        await asyncio.to_thread(terminate_after_commit, pg_url, pid)
        return op

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for w in self._writers:
                w.transport.abort()
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        for sock in self._sockets:
            sock.close()
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, c_reader: asyncio.StreamReader,
                     c_writer: asyncio.StreamWriter) -> None:
        # The server's side is a bare socket: a session the server ends may end with a
        # reset right after its FATAL message, and a StreamReader that meets the reset
        # raises it at once, dropping the bytes it had read before it (the FATAL); a
        # socket's recv gives them first, as the client's own would. The client's side
        # is closed however the server's ends (it waited out its deadline on a reset).
        loop = asyncio.get_running_loop()
        server = socket.socket()
        server.setblocking(False)
        await loop.sock_connect(server, (self.host, self.target_port))
        self._writers.append(c_writer)
        self._sockets.append(server)
        holding = False

        async def to_server() -> None:
            nonlocal holding
            while data := await c_reader.read(65536):
                if holding:
                    continue
                if self._armed and _SYNC in data:
                    self._armed, holding = False, True
                    await loop.sock_sendall(server, data[:data.index(_SYNC)])
                    self.held.set()
                    continue
                await loop.sock_sendall(server, data)
            server.shutdown(socket.SHUT_WR)

        async def to_client() -> None:
            try:
                while data := await loop.sock_recv(server, 65536):
                    c_writer.write(data)
            finally:
                c_writer.close()

        await asyncio.gather(to_server(), to_client(), return_exceptions=True)
        server.close()


def terminate_after_commit(pg_url: str, pid: int) -> None:
    """End backend ``pid``'s session once it has run the pipeline's COMMIT and waits for
    the client (the held Sync). The Sync kept back only says that the COMMIT went out:
    a backend still planning an earlier statement was ended before it, its FATAL the
    answer to that statement, and the statements after it failed with "server closed
    the connection unexpectedly", which psycopg raised instead (a third of the runs on
    a loaded machine)."""
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for _ in range(3000):
            row = admin.execute("SELECT query, wait_event FROM pg_stat_activity"
                                " WHERE pid = %s", (pid,)).fetchone()
            if row == ("COMMIT", "ClientRead"):
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"backend {pid} never ran the pipeline's COMMIT: {row}")
        assert admin.execute("SELECT pg_terminate_backend(%s, 10000)",
                             (pid,)).fetchone() == (True,)


async def wait_for(event: threading.Event, what: str, timeout: float = 30.0) -> None:
    """Wait (off the event loop) until ``event`` is set; fail saying ``what`` never
    happened."""
    if not await asyncio.to_thread(event.wait, timeout):
        raise AssertionError(f"never: {what}")


async def backend_pid(store: PostgresStore) -> int:
    """The server process of the connection of a store on one connection (the one its
    next operation uses)."""
    assert store._pool is not None
    conn = await store._pool.getconn()
    pid = conn.info.backend_pid
    await store._pool.putconn(conn)
    return pid


@contextlib.contextmanager
def cutting_proxy(url: str) -> Iterator[CuttingProxy]:
    """A ``CuttingProxy`` to the server at ``url``, closed at the end."""
    p = CuttingProxy(url).start()
    try:
        yield p
    finally:
        p.close()


@contextlib.asynccontextmanager
async def one_connection(url: str, **options: Any) -> AsyncIterator[PostgresStore]:
    """A PostgresStore on ``url`` (a proxy's) with one connection, open, closed at the
    end: its next operation's connection is the one ``backend_pid`` names."""
    store = PostgresStore(url, pool_min=1, pool_max=1, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def direct_app(url: str) -> AsyncIterator[App]:
    """The test's own App on the server directly (never cut), open, closed at the end."""
    app = App(url)
    await app._open()
    try:
        yield app
    finally:
        await app.close()


async def run_ended(client: App, run_id: str, timeout: float = 30.0) -> Any:
    """The run ``run_id`` once it has ended, read (polling) through ``client``."""
    deadline = time.monotonic() + timeout
    while True:
        run = await client.store.run_get(run_id)
        if run is not None and run.status.is_ended:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run and run.status}"
        await asyncio.sleep(0.05)
