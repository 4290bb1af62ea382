"""A private PostgreSQL cluster for the scenarios that restart or cut off the server.

The shared server on 127.0.0.1:5432 is never touched: ``PrivateCluster`` runs
``initdb`` into a temporary folder as the ``postgres`` user, listens on a port of its
own (55433 and up) and on the addresses given, with ``fsync=on``, and is stopped and
deleted afterwards. ``restart_immediate()`` is ``pg_ctl restart -m immediate``: the
server dies without a checkpoint and recovers from its WAL, as after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")


def missing_privilege() -> str | None:
    """Why a private cluster cannot run here, or None."""
    if not (BIN / "initdb").exists():
        return f"no PostgreSQL server binaries at {BIN}"
    if os.geteuid() != 0:
        return "needs root (to run initdb and pg_ctl as the postgres user)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user"
    return None


def _free_port(host: str = "127.0.0.1", start: int = 55433) -> int:
    """A port nothing listens on, reserved against the clusters of other processes for
    the rest of this process (a test that needs a port where no server answers)."""
    return _reserve_port(host, start)[0]


def _reserve_port(host: str = "127.0.0.1", start: int = 55433) -> tuple[int, int | None]:
    """The first port from ``start`` that nothing listens on and that no other cluster
    of this machine has reserved, and the descriptor of its reservation: a lock
    (``flock``) on a file named after the port, held until the descriptor is closed
    (``stop``, or the process's end). Two clusters made at once in two processes, before
    either started, took the same first free port: a test that keeps its cluster down
    for a while (test_stdio's store that comes up late) then reached the other one."""
    for port in range(start, start + 500):
        fd: int | None = None
        with contextlib.suppress(OSError):
            fd = os.open(os.path.join(tempfile.gettempdir(), f"tether-pg-port-{port}.lock"),
                         os.O_CREAT | os.O_RDWR, 0o666)
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                if fd is not None:
                    os.close(fd)
                continue
        return port, fd
    raise RuntimeError("no free port for a private PostgreSQL cluster")


class PrivateCluster:
    def __init__(self, listen: tuple[str, ...] = ("127.0.0.1",), port: int | None = None,
                 max_connections: int = 120) -> None:
        self.listen = listen
        self._reservation: int | None = None
        if port is None:
            port, self._reservation = _reserve_port(listen[0])
        self.port = port
        self.max_connections = max_connections
        self.dir = Path(tempfile.mkdtemp(prefix="tether-chaos-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.restarts = 0

    def url(self, host: str | None = None, db: str = "postgres") -> str:
        return f"postgresql://postgres@{host or self.listen[0]}:{self.port}/{db}"

    def _as_postgres(self, *args: str, timeout: float = 120,
                     check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True,
                             text=True, timeout=timeout, check=False)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {out.stdout}\n{out.stderr}")
        return out

    def _pg_ctl(self, *args: str, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-l",
                                 str(self.log), "-w", "-t", "60", *args, timeout=timeout,
                                 check=check)

    def start(self) -> PrivateCluster:
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        self._as_postgres(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "--no-sync", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '{','.join(self.listen)}'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.dir}'\nfsync = on\n"
                       f"synchronous_commit = on\nmax_connections = {self.max_connections}\n"
                       "shared_buffers = 32MB\nlog_min_messages = warning\n")
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
        self._pg_ctl("start")
        return self

    def restart_immediate(self) -> float:
        """``pg_ctl restart -m immediate``; returns the seconds until it accepts
        connections again."""
        return self.restart("immediate")

    def restart(self, mode: str) -> float:
        """``pg_ctl restart -m <mode>`` (``immediate``: no checkpoint, recovery from
        the WAL; ``fast``: sessions ended, a checkpoint); returns the seconds until it
        accepts connections again."""
        t0 = time.monotonic()
        self._pg_ctl("restart", "-m", mode)
        self.wait_ready()
        self.restarts += 1
        return time.monotonic() - t0

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run([str(BIN / "pg_isready"), "-q", "-h", self.listen[0], "-p",
                                  str(self.port)], check=False, timeout=10)
            if out.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"private cluster on port {self.port} not ready")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "immediate", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        reservation, self._reservation = self._reservation, None
        if reservation is not None:
            os.close(reservation)


@contextlib.contextmanager
def private_cluster(listen: tuple[str, ...] = ("127.0.0.1",),
                    max_connections: int = 120) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(listen, max_connections=max_connections)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
