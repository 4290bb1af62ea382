"""Cross-process wake-ups for processes sharing one SQLite file.

Each subscriber binds a Unix datagram socket in a folder named after the database
file; a process that commits a change that makes work available (a new run, a signal,
a cancel, a run's end) sends one byte to every socket there. Sockets of processes that
died are found by ``ECONNREFUSED`` and removed. A lost datagram costs only latency:
workers also poll slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable


class Notifier:
    def __init__(self, db_path: str) -> None:
        digest = hashlib.sha256(os.path.realpath(db_path).encode()).hexdigest()[:16]
        self.folder = os.path.join(tempfile.gettempdir(), f"tether-{digest}")
        self._sender: socket.socket | None = None
        self._lock = threading.Lock()

    def publish(self) -> None:
        """Wake every subscriber (any thread)."""
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
                    sender.sendto(b"w", path)
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                except (BlockingIOError, OSError):
                    pass  # its buffer is full: it has wake-ups pending anyway

    def close(self) -> None:
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None

    def subscribe(self, loop: asyncio.AbstractEventLoop,
                  callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        path = os.path.join(self.folder, f"{os.getpid()}-{uuid.uuid4().hex[:12]}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock.bind(path)
        sock.setblocking(False)

        def readable() -> None:
            try:
                while True:
                    sock.recv(64)
            except (BlockingIOError, OSError):
                pass
            callback()

        loop.add_reader(sock.fileno(), readable)

        async def unsubscribe() -> None:
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(path)

        return unsubscribe
