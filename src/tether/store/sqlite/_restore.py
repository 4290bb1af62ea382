"""``tether db restore`` into a SQLite store.

The backup is first copied (SQLite's backup API) into a staging file beside the target,
checked there (``PRAGMA quick_check``, a Tether schema this code knows) and migrated if
older, and its worker registrations are left out (no worker of the source store is
attached to the restored one); the staging file is then copied into the target with the
backup API in one step: one write transaction, so a reader of the target sees the old
store or the restored one, never a mix, and the target's ``-wal`` and ``-shm`` files
stay SQLite's own (a raw file copy over a store with a ``-wal`` beside it is corrupted
by it).

A process using the target is found by the lock SQLite's WAL mode makes every
connection hold on the ``-shm`` file (its "dead man switch" byte) for as long as it is
open: a worker, a ``tether serve``, anything. The rows of ``tether_workers`` name it
when it is a worker of this host; a row of another host counts while its heartbeat is
fresh (a SQLite file shared by two hosts over a network file system).

The copy is made under the target's exclusive lock (``_lock_target``), taken only when
no process has the file open, and the target is checked again under it: a process
that opened the store after the first check is refused there, and one that opens it
from then on waits for the lock, having read nothing, and reads the restored store
once the copy is committed. A worker started during a restore therefore never holds
a run of the old store in the restored one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import apsw

from tether import _faults
from tether._procs import process_alive
from tether.errors import ConfigError, StoreError
from tether.store._port import WorkerInfo
from tether.store._restore import (
    RestoreRefused,
    RestoreResult,
    command_kind,
    command_line,
    describe,
    file_kind,
    fresh,
    in_use_by,
    newer_schema,
    stop_hint,
    wrong_kind,
)
from tether.store._sql import load_migrations

if TYPE_CHECKING:
    from tether.store.sqlite._store import SqliteStore

_PACKAGE = "tether.store.sqlite"
#: The byte of the ``-shm`` file every open WAL connection holds a shared lock on
#: (SQLite's unix VFS: ``UNIX_SHM_DMS``, after the 8 WAL locks at byte 120).
_SHM_DMS = 128
#: How long the restore waits for the target's lock (a process reading it for a
#: moment) before it refuses: a process that keeps the store open holds it for good.
LOCK_WAIT = 2.0


def _flock_layout() -> str | None:
    """``struct flock``'s layout on this platform, or None where not known."""
    if sys.platform.startswith("linux"):
        return "hhqqi4x"  # l_type, l_whence, l_start, l_len, l_pid
    if sys.platform == "darwin" or "bsd" in sys.platform:
        return "qqihh"  # l_start, l_len, l_pid, l_type, l_whence
    return None


def shm_holders(path: str) -> list[int]:
    """The pids of the processes (not this one) that have the WAL database ``path``
    open: every one, read from /proc/locks (Linux); else the one ``F_GETLK`` names.
    None when no ``-shm`` file exists (no process has the file open in WAL mode)."""
    try:
        st = os.stat(f"{path}-shm")
    except OSError:
        return []
    found = _proc_locks(st)
    if found is None:
        one = _getlk(f"{path}-shm")
        found = [] if one is None else [one]
    return [pid for pid in dict.fromkeys(found) if pid != os.getpid()]


def _proc_locks(st: os.stat_result) -> list[int] | None:
    """The pids /proc/locks says hold a lock on the DMS byte of the file ``st`` is of,
    or None without /proc/locks. A line: ``1: POSIX ADVISORY READ 1234 08:01:5678 128
    128`` (a waiter's has ``->`` after its number)."""
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    pids = []
    for line in lines:
        words = line.split()
        if len(words) < 8 or words[1] == "->" or words[1] != "POSIX" or words[5] != inode:
            continue
        with contextlib.suppress(ValueError):
            start, end = int(words[6]), words[7]
            if start <= _SHM_DMS and (end == "EOF" or int(end) >= _SHM_DMS):
                pids.append(int(words[4]))
    return pids


def _getlk(shm: str) -> int | None:
    """The pid of one process holding the DMS byte of ``shm``, if any (``F_GETLK``)."""
    layout = _flock_layout()
    if layout is None:
        return None
    try:
        fd = os.open(shm, os.O_RDONLY)
    except OSError:
        return None
    try:
        fields: dict[str, int] = {"type": fcntl.F_WRLCK, "whence": os.SEEK_SET,
                                  "start": _SHM_DMS, "len": 1, "pid": 0}
        order = (("type", "whence", "start", "len", "pid") if layout.startswith("hh")
                 else ("start", "len", "pid", "type", "whence"))
        got = struct.unpack(layout, fcntl.fcntl(
            fd, fcntl.F_GETLK, struct.pack(layout, *(fields[k] for k in order))))
        answer = dict(zip(order, got, strict=True))
        return None if answer["type"] == fcntl.F_UNLCK else int(answer["pid"])
    except OSError:
        return None
    finally:
        os.close(fd)


def _tables(conn: apsw.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _versions(conn: apsw.Connection, tables: set[str]) -> tuple[set[int], set[int]]:
    required: set[int] = set()
    compatible: set[int] = set()
    if "tether_schema_version" in tables:
        required = {r[0] for r in conn.execute("SELECT version FROM tether_schema_version")}
    if "tether_schema_compatible" in tables:
        compatible = {r[0] for r in conn.execute(
            "SELECT version FROM tether_schema_compatible")}
    return required, compatible


def _known() -> dict[int, str]:
    return {v: name for v, name, _ in load_migrations(_PACKAGE)}


def _counts(conn: apsw.Connection, tables: set[str]) -> tuple[int, int, int]:
    """(runs, waiting runs, schedules) of a Tether file."""
    runs: Any = 0
    waiting: Any = 0
    schedules: Any = 0
    if "tether_runs" in tables:
        runs, waiting = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'waiting') "
            "FROM tether_runs").fetchall()[0]
    if "tether_schedules" in tables:
        schedules = conn.execute("SELECT count(*) FROM tether_schedules").fetchall()[0][0]
    return int(runs), int(waiting), int(schedules)


def _workers(conn: apsw.Connection, tables: set[str]) -> list[WorkerInfo]:
    if "tether_workers" not in tables:
        return []
    return [WorkerInfo(*row) for row in conn.execute(
        "SELECT worker_id, hostname, pid, pid_start, queues, started_at, heartbeat_at "
        "FROM tether_workers ORDER BY started_at")]


def _refuse_live(path: str, workers: list[WorkerInfo], again: str = "the restore") -> None:
    """Refuse if a process has the store ``path`` open, or a worker of another host
    heartbeated lately. ``again``: the command refused (``the restore``, ``the copy``),
    which the message says to run again once they are stopped."""
    host = socket.gethostname()
    now = time.time()
    pids = shm_holders(path)
    holders = [w for w in workers if w.hostname == host and w.pid in pids]
    if holders:  # (a worker first: its name says more)
        raise RestoreRefused(f"{path} is in use by {in_use_by(holders, now, host, again)}")
    if pids:
        pid = pids[0]
        more = f" and {len(pids) - 1} more" if len(pids) > 1 else ""
        kind = command_kind(pid)
        if kind is not None:  # (tether serve, tether mcp --no-worker: no worker row)
            raise RestoreRefused(
                f"{path} is in use by tether {kind} (pid {pid} on {host}){more}: stop it "
                f"(kill -TERM {pid}), then run {again} again")
        cmd = command_line(pid)
        raise RestoreRefused(
            f"{path} is in use by process {pid}{f' ({cmd})' if cmd else ''}{more}, a "
            "tether serve or another program with the store open: stop it (kill -TERM "
            f"{pid}), then run {again} again")
    # Without the lock (no process of this host has the file open), a worker of this
    # host is not using it, whatever its row says: a row restored with a backup names a
    # worker of the backup's source store. Where the lock cannot be read, its process.
    can_tell = os.path.exists("/proc/locks") or _flock_layout() is not None
    for w in workers:
        if not fresh(w, now):
            continue
        if w.hostname == host and (can_tell or not process_alive(w.pid, w.pid_start)):
            continue
        raise RestoreRefused(
            f"{path} may be in use by {describe(w, now)}: {stop_hint(w, host, again)}")


def _target_state(store: SqliteStore, path: str, force: bool,
                  locked: apsw.Connection | None = None) -> int:
    """Check the target may be restored into; return how many runs it holds. Read
    through ``locked``, the restore's connection that holds the file's lock
    (``_lock_target``), when given (no other connection can read it then).

    Raises: RestoreRefused."""
    if locked is None and (not os.path.exists(path) or os.path.getsize(path) == 0):
        _refuse_live(path, [])
        return 0
    conn = locked or store._open_file()
    try:
        if locked is None:
            conn.execute("PRAGMA query_only=ON")
            conn.setbusytimeout(int(LOCK_WAIT * 1000))
        try:
            tables = _tables(conn)
        except (apsw.NotADBError, apsw.CorruptError) as exc:
            raise RestoreRefused(
                f"{path} is not a Tether store ({str(exc).splitlines()[0]}); it was left "
                "unchanged: restore into a new path, or move that file away") from None
        except (apsw.BusyError, apsw.LockedError):
            # (Readers of a WAL database wait for no writer: only for a process that
            # holds the file exclusively, such as another restore into it.)
            raise RestoreRefused(
                f"{path} is in use: another process holds it locked (another restore "
                "into it?): wait for it to end, then run the restore again") from None
        if not tables:
            runs = schedules = 0
            workers: list[WorkerInfo] = []
        else:
            if "tether_schema_version" not in tables:
                sample = ", ".join(sorted(tables)[:3]) + (", ..." if len(tables) > 3 else "")
                raise RestoreRefused(
                    f"{path} is not a Tether store (it holds other tables: {sample}); it was "
                    "left unchanged: restore into a new path, or move that file away")
            required, _ = _versions(conn, tables)
            known = _known()
            unknown = required - set(known)
            if unknown:
                raise newer_schema(f"the store {path}", unknown, known)
            runs, _, schedules = _counts(conn, tables)
            workers = _workers(conn, tables)
    finally:
        if locked is None:
            conn.close()
    _refuse_live(path, workers)
    if (runs or schedules) and not force:
        held = f"{runs} run{'s' if runs != 1 else ''}" + (
            f" and {schedules} schedule{'s' if schedules != 1 else ''}" if schedules else "")
        raise RestoreRefused(
            f"{path} holds {held}: a restore would replace what it holds; restore into "
            "a new path, or give --force to replace it")
    return runs


def _lock_target(store: SqliteStore, path: str, force: bool) -> apsw.Connection:
    """A connection to the target (which exists) holding the file's exclusive lock,
    which it keeps until it is closed: ``locking_mode=EXCLUSIVE``, then a write
    transaction (in WAL mode the lock is taken as the connection first reads, and
    the WAL index is kept in its own memory, not the ``-shm`` file).

    Every other connection to a WAL database holds a shared lock on the file for as
    long as it is open, so the lock is had only when no process has the store open;
    and a process that opens it meanwhile waits for it (its busy timeout: a worker
    and ``tether serve`` wait up to 30 s, then a worker tries again) before it has
    read anything, and then reads the restored store: a worker starting during a
    restore has claimed nothing of the old store.

    Raises: RestoreRefused (a process has the store open), StoreUnavailable."""
    conn = store._open_file()
    try:
        conn.setbusytimeout(int(LOCK_WAIT * 1000))  # (a reader's moment, not a worker)
        conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
        conn.execute("BEGIN EXCLUSIVE; COMMIT")
    except (apsw.BusyError, apsw.LockedError):
        conn.close()
        _target_state(store, path, force)  # (names the worker or process, if it can)
        raise RestoreRefused(
            f"{path} is in use: another process has it open (it holds the store's "
            "lock): stop the Tether processes using it, then run the restore "
            "again") from None
    except BaseException:
        conn.close()
        raise
    conn.setbusytimeout(int(store.busy_timeout * 1000))
    return conn


def _open_backup(path: str) -> apsw.Connection:
    """The backup file, for reading only, changing nothing beside it: a file with no
    ``-wal`` beside it is read as immutable (SQLite then makes no ``-shm`` file)."""
    option = "mode=ro" if os.path.exists(f"{path}-wal") else "immutable=1"
    uri = f"file:{quote(path)}?{option}"
    return apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)


def _remove(path: str) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def restore(store: SqliteStore, backup: str, *, force: bool) -> RestoreResult:
    """Restore the backup file ``backup`` into ``store``'s file (see the module).

    Raises: RestoreRefused (nothing was changed), ConfigError, StoreError.
    """
    from tether.store.sqlite._store import _create_private, translate_error

    if store.read_only:
        raise ConfigError("a read-only store cannot be restored into")
    source = os.path.abspath(backup)
    target = os.path.abspath(store.path)
    kind = file_kind(backup)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise RestoreRefused(f"no folder {folder} for the store {store.path}")
    if os.path.exists(target) and os.path.samefile(source, target):
        raise RestoreRefused(f"{backup} is the store itself: restore into another path")
    if kind != "sqlite":
        raise wrong_kind(backup, kind, "sqlite")
    replaced = _target_state(store, target, force)
    staging = os.path.join(folder, f".{os.path.basename(target)}.restore-{os.getpid()}")
    _remove(staging)
    try:
        _create_private(staging)
        stage = apsw.Connection(staging)
        try:
            try:
                src = _open_backup(source)
                try:
                    with stage.backup("main", src, "main") as step:
                        step.step(-1)
                finally:
                    src.close()
            except (apsw.NotADBError, apsw.CorruptError) as exc:
                raise RestoreRefused(
                    f"{backup} is not a Tether backup: it is damaged or not a SQLite "
                    f"database ({str(exc).splitlines()[0]})") from None
            stage.execute("PRAGMA journal_mode=DELETE")
            found = stage.execute("PRAGMA quick_check").fetchall()
            if found != [("ok",)]:
                raise RestoreRefused(f"{backup} is damaged (PRAGMA quick_check: "
                                     f"{found[0][0] if found else 'no answer'})")
            tables = _tables(stage)
            if "tether_schema_version" not in tables or "tether_runs" not in tables:
                sample = ", ".join(sorted(tables)[:3]) or "none"
                raise RestoreRefused(
                    f"{backup} is a SQLite database but not a Tether backup (its tables: "
                    f"{sample}{', ...' if len(tables) > 3 else ''})")
            required, compatible = _versions(stage, tables)
            known = _known()
            unknown = required - set(known)
            if unknown:
                raise newer_schema(f"the backup {backup}", unknown, known)
            backup_version = max(required | (compatible & set(known)), default=0)
            pending = [f"{v:04d}_{n}" for v, n in known.items()
                       if v not in required | compatible]
            migrated: list[str] = []
            if pending and store.auto_migrate:
                migrated = store._migrate(stage)
                pending = []
            if "tether_workers" in _tables(stage):
                # No worker of the source store is attached to the restored one: its
                # rows (heartbeats up to a minute old) would list them live.
                stage.execute("DELETE FROM tether_workers")
            runs, waiting, _ = _counts(stage, _tables(stage))
            done = set().union(*_versions(stage, _tables(stage)))
            version = max(done & set(known), default=0)
            _faults.point("restore.checked")
            # Checked again, under the target's lock, which a process that opens the
            # store meanwhile waits for until the copy is committed: one started
            # since the first check is refused here, one starting from now on reads
            # the restored store only.
            _create_private(target)
            dest = _lock_target(store, target, force)
            try:
                replaced = _target_state(store, target, force, locked=dest)
                _faults.point("restore.locked")
                if os.path.getsize(target) > 0:
                    mode = dest.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
                    if str(mode).lower() != "wal":
                        raise StoreError(f"SQLite store {target!r} cannot use WAL mode")
                with dest.backup("main", stage, "main") as step:
                    step.step(-1)  # one step: one transaction
                dest.execute("PRAGMA journal_mode=WAL")
                dest.execute(f"PRAGMA synchronous={store.synchronous}")
                found = dest.execute("PRAGMA quick_check").fetchall()
                if found != [("ok",)]:
                    raise StoreError(f"the restored store {target!r} failed its check "
                                      f"({found[0][0] if found else 'no answer'})")
            finally:
                dest.close()
        except apsw.Error as exc:
            raise translate_error(exc, target) from exc
        finally:
            stage.close()
    finally:
        _remove(staging)
    return RestoreResult(target=target, runs=runs, waiting=waiting,
                         backup_schema_version=backup_version, schema_version=version,
                         migrated=migrated, pending=pending, replaced_runs=replaced)
