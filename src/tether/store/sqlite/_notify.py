"""Cross-process wake-ups for processes sharing one SQLite file.

Each subscriber binds a Unix datagram socket in a folder named after the database
file; a process that commits a change that makes work available (a new run, a signal,
a cancel, a run's end) sends one byte to every socket there; a cancel of a running run
also sends ``c<run id>``, so the worker holding it interrupts it at once. Sockets of processes that
died are found by ``ECONNREFUSED`` and removed. A lost datagram costs only latency:
workers also poll slowly.

The folders live under ``<tmp>/tether-<uid>``, which must be a real folder owned by this
user with mode 0700 (made with ``mkdir``, which fails if the name exists). If another
user got there first, or made it a symlink or left it open to others, Tether does not
use it: it logs a warning and goes without wake-ups (workers find work by polling; live
events are not streamed), rather than send a run's output to a stranger's socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import stat
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger("tether.store")

#: The largest wake-up datagram (a cancel names its run).
MAX_MESSAGE = 4096


def private_root() -> str | None:
    """``<tmp>/tether-<uid>``, created 0700 if missing; None (with a warning) if that name
    is not a folder that only this user can use."""
    uid = os.geteuid()
    root = os.path.join(tempfile.gettempdir(), f"tether-{uid}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    try:
        st = os.lstat(root)
    except OSError as exc:
        log.warning("no private folder for wake-ups at %s (%s); polling instead", root, exc)
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        log.warning("%s is not a folder private to uid %d (owner %d, mode %o); not using "
                    "it: no wake-ups between processes, workers poll instead", root, uid,
                    st.st_uid, stat.S_IMODE(st.st_mode))
        return None
    return root


class Notifier:
    def __init__(self, db_path: str) -> None:
        digest = hashlib.sha256(os.path.realpath(db_path).encode()).hexdigest()[:16]
        root = private_root()
        #: The folder of this store's sockets, or None when no private place exists.
        self.folder = os.path.join(root, digest) if root is not None else None
        self._sender: socket.socket | None = None
        self._lock = threading.Lock()

    def publish(self, message: bytes = b"w") -> None:
        """Wake every subscriber (any thread)."""
        if self.folder is None:
            return
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        with self._lock:
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            sender = self._sender
            for name in names:
                path = os.path.join(self.folder, name)
                try:
                    sender.sendto(message, path)
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                except (BlockingIOError, OSError):
                    pass  # its buffer is full: it has wake-ups pending anyway

    def publish_cancel(self, run_id: str) -> None:
        """Tell every subscriber that ``run_id`` was asked to cancel (any thread)."""
        data = b"c" + run_id.encode()
        if len(data) <= MAX_MESSAGE:  # a longer id waits for its worker's heartbeat
            self.publish(data)

    def close(self) -> None:
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None

    def subscribe(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None],
                  on_cancel: Callable[[str], None] | None = None,
                  ) -> Callable[[], Awaitable[None]]:
        if self.folder is None:
            async def nothing() -> None:
                return None

            return nothing
        folder = self.folder
        path = os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex[:12]}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            for tries_left in (1, 0):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, 0o700)  # inside the private root: nobody else can
                try:
                    sock.bind(path)
                    break
                except FileNotFoundError:  # the last subscriber removed it meanwhile
                    if not tries_left:
                        raise
        except OSError as exc:  # e.g. a TMPDIR so deep the socket path is too long
            sock.close()
            log.warning("no wake-ups at %s (%s); polling instead", path, exc)

            async def nothing() -> None:
                return None

            return nothing
        sock.setblocking(False)

        def readable() -> None:
            cancels: list[str] = []
            try:
                while True:
                    data = sock.recv(MAX_MESSAGE)
                    if data[:1] == b"c" and on_cancel is not None:
                        cancels.append(data[1:].decode(errors="replace"))
            except (BlockingIOError, OSError):
                pass
            for run_id in dict.fromkeys(cancels):
                on_cancel(run_id)  # type: ignore[misc]
            callback()

        loop.add_reader(sock.fileno(), readable)

        async def unsubscribe() -> None:
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
            _remove_if_empty(folder)  # (one per store file, else left for ever)

        return unsubscribe


class EventBus:
    """Live events of runs between processes sharing one SQLite file (no database).

    A subscriber to a run listens on a Unix stream socket in a folder named after the
    run (under the store's notification folder). A publisher connects once to each
    socket there, keeps the connection, and writes each event as a length-prefixed
    frame: events from one publisher arrive whole and in order (datagrams would not do:
    Linux queues only ``net.unix.max_dgram_qlen``, often 10, per socket, and a burst of
    streamed chunks overflows it). Best effort: a subscriber that lags by more than
    ``MAX_BACKLOG`` bytes is dropped, and a socket left by a process that died is
    removed by the next publish.
    """

    MAX_BACKLOG = 4 * 1024 * 1024

    def __init__(self, folder: str | None) -> None:
        self.folder = folder  # None: no private place, no live events between processes
        self._conns: dict[str, asyncio.StreamWriter] = {}

    def _run_folder(self, run_id: str) -> str:
        assert self.folder is not None
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:24]
        return os.path.join(self.folder, f"ev-{digest}")

    async def publish(self, run_id: str, data: bytes) -> None:
        if self.folder is None:
            return
        folder = self._run_folder(run_id)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            names = []
        paths = {os.path.join(folder, name) for name in names}
        for path in [p for p in self._conns if p.startswith(folder + os.sep)]:
            if path not in paths:  # that subscriber is gone
                self._conns.pop(path).close()
        frame = len(data).to_bytes(4, "big") + data
        for path in sorted(paths):
            writer = self._conns.get(path)
            if writer is None or writer.is_closing():
                writer = await self._connect(path)
                if writer is None:
                    continue
            writer.write(frame)
            if writer.transport.get_write_buffer_size() > self.MAX_BACKLOG:
                writer.close()  # it stopped reading: drop it rather than grow without end
                self._conns.pop(path, None)

    async def _connect(self, path: str) -> asyncio.StreamWriter | None:
        self._conns.pop(path, None)
        try:
            _, writer = await asyncio.open_unix_connection(path)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(OSError):
                os.unlink(path)  # its process died
            return None
        except OSError:
            return None
        self._conns[path] = writer
        return writer

    def close(self) -> None:
        for writer in self._conns.values():
            writer.close()
        self._conns.clear()

    async def subscribe(self, run_id: str, *,
                        ready: Callable[[], None] | None = None) -> AsyncIterator[str]:
        """Events published for ``run_id`` from the moment this generator first runs;
        ``ready`` is called once its socket listens (a publish that lists the folder
        after that finds it)."""
        if self.folder is None:
            if ready is not None:
                ready()
            await asyncio.Event().wait()  # nothing will arrive; ends when cancelled
            return
        folder = self._run_folder(run_id)
        path = os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex[:12]}")
        received: asyncio.Queue[bytes] = asyncio.Queue()
        readers: set[asyncio.StreamWriter] = set()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            readers.add(writer)
            try:
                while True:
                    size = int.from_bytes(await reader.readexactly(4), "big")
                    received.put_nowait(await reader.readexactly(size))
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                readers.discard(writer)
                writer.close()

        for tries_left in (1, 0):
            os.makedirs(folder, mode=0o700, exist_ok=True)
            try:
                server = await asyncio.start_unix_server(serve, path)
                break
            except FileNotFoundError:  # the last subscriber removed it meanwhile
                if not tries_left:
                    raise
        if ready is not None:
            ready()
        try:
            while True:
                yield (await received.get()).decode()
        finally:
            server.close()
            for writer in list(readers):
                writer.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
            _remove_if_empty(folder)
            _remove_if_empty(os.path.dirname(folder))


def _remove_if_empty(folder: str) -> None:
    """Remove ``folder`` if nothing is left in it (a subscriber that comes meanwhile
    makes it again)."""
    with contextlib.suppress(OSError):
        os.rmdir(folder)
