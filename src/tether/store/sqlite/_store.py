"""SqliteStore: the embedded default.

One writer thread owns one connection (apsw, which bundles a current SQLite). Callers
on the event loop hand it operations through a queue; the thread takes everything that
is pending, runs it in one ``BEGIN IMMEDIATE`` transaction (a savepoint per operation,
so one failing operation does not undo the others), commits once and resolves every
caller's future. That is group commit: concurrent runs share one fsync.

Durability: WAL mode with ``synchronous=FULL`` by default (a committed operation
survives power loss); ``synchronous=NORMAL`` is opt-in (``?synchronous=normal`` in the
URL) for users who accept losing the last commits on power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, parse_qsl, urlparse

import apsw

from tether._types import (
    ClaimedRun,
    EntryStatus,
    JournalEntry,
    Lease,
    OperationKind,
    RunRecord,
    RunStatus,
)
from tether.errors import (
    ConfigError,
    LeaseLost,
    RunNotFound,
    SignalError,
    StoreError,
    StoreUnavailable,
)
from tether.store._backup import check_target, partial_file
from tether.store._inline import LoopTurns, loop_quiet
from tether.store._lifecycle import (
    ArchivedJournal,
    AttemptRecord,
    PurgeReport,
    RetryReport,
    ScheduleRecord,
    child_id_taken,
    not_resumable,
    refuse_erased,
)
from tether.store._port import (
    HeartbeatResult,
    SignalSent,
    StoreCapabilities,
    Wait,
    WorkerInfo,
    is_wait_list,
    wait_list,
)
from tether.store._restore import RestoreResult
from tether.store._sql import (
    entry_from_row,
    entry_params,
    final_conflict,
    lease_params,
    load_migrations,
    load_queries,
    run_from_row,
    run_params,
    same_entry,
)
from tether.store._values import (
    bucket_take,
    check_event,
    check_metrics,
    check_queue_limit,
    check_rate,
)
from tether.store.sqlite import _lifecycle as _lc
from tether.store.sqlite._notify import EventBus, Notifier
from tether.store.sqlite._serve import SqliteServeQueries, event_chunk
from tether.store.sqlite._writer import Op, Outcome, deliver

T = TypeVar("T")

if TYPE_CHECKING:
    from tether.store._port import Store

_PACKAGE = "tether.store.sqlite"
Q = load_queries(_PACKAGE)

#: SQLite releases before this one can corrupt a WAL database when several
#: connections write at once and the WAL is reset (fixed in 3.51.3).
SAFE_MULTIPROCESS_VERSION = (3, 51, 3)

_MAX_BATCH = 512
#: How often (seconds) the writer checks that the store's path still names its file.
_FILE_CHECK_EVERY = 1.0

log = logging.getLogger("tether.store.sqlite")
#: Most runs one inline read (``_call_inline``) takes: a longer read goes to the writer
#: thread, which the event loop need not wait for.
_INLINE_READ_MAX = 64
#: Most writes one event loop commits itself as a group (``_flush_group``): a larger
#: group goes to the writer thread, whose SQLite work overlaps the loop's own.
_GROUP_INLINE_MAX = 128
#: The most runs a single-queue claim takes in its one statement (``run_claim``), whose
#: answer looks up each run's due time among the picked rows (a scan of them per run:
#: ~14 ns a comparison, 0.9 ms for 256 runs); a larger claim reads its candidates first
#: and updates them by id (``run_claim_candidates``, ``run_claim_ids``): one statement
#: more, linear in the runs.
_CLAIM_ONE_STATEMENT_MAX = 32
#: Most runs a read gathered into a group asks for (``run_get_many``).
_GROUP_READ_MAX = 256


class _Busy(Exception):
    """Another process holds the write lock, and the batch was not to wait for it."""


#: The line that marks a migration earlier versions can run beside: it adds only what
#: their code neither reads nor writes (an index), so a store it was applied to is one
#: they may keep using during a rolling update. It is recorded in
#: ``tether_schema_compatible``, not ``tether_schema_version``: a version refuses a store
#: whose ``tether_schema_version`` holds a migration it does not know ("written by a
#: newer Tether"), which is right for every other migration.
COMPATIBLE_MARK = "-- tether: compatible"


def is_compatible(sql: str) -> bool:
    return any(line.strip() == COMPATIBLE_MARK for line in sql.splitlines())


def _applied(conn: apsw.Connection, tables: set[str]) -> tuple[set[int], set[int]]:
    """The versions of the migrations applied to the file: those a version must know to
    use it (``tether_schema_version``), and those it may not know (compatible ones)."""
    required: set[int] = set()
    compatible: set[int] = set()
    if "tether_schema_version" in tables:
        required = {r[0] for r in conn.execute(Q["schema_applied"])}
    if "tether_schema_compatible" in tables:
        compatible = {r[0] for r in conn.execute(Q["schema_compatible_applied"])}
    return required, compatible


def _status(conn: apsw.Connection) -> list[tuple[int, str, bool]]:
    """(version, name, applied?) of every known migration, read on ``conn``."""
    done = set().union(*_applied(conn, {r[0] for r in conn.execute(Q["schema_tables"])}))
    return [(v, name, v in done) for v, name, _ in load_migrations(_PACKAGE)]


def _create_private(path: str) -> None:
    """Create an empty store file readable by its owner only (SQLite gives the -wal and
    -shm files the database file's mode). Another process creating it first is fine."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _schema_state(conn: apsw.Connection, path: str) -> str:
    """``new`` (an empty database), ``current`` or ``behind``; raises ConfigError for a
    file that is not a Tether store or was written by a newer Tether."""
    tables = {r[0] for r in conn.execute(Q["schema_tables"])}
    if not tables:
        return "new"
    if "tether_schema_version" not in tables:
        sample = ", ".join(sorted(tables)[:3]) + (", ..." if len(tables) > 3 else "")
        raise ConfigError(
            f"{path} is not a Tether store (it holds other tables: {sample}); "
            "it was left unchanged: point --db at a new or a Tether file")
    # A compatible migration this version does not know (a newer one's index) does
    # not stop it: the newer version said this version runs beside it.
    applied, compatible = _applied(conn, tables)
    known = {v for v, _, _ in load_migrations(_PACKAGE)}
    unknown = sorted(applied - known)
    if unknown:
        raise ConfigError(
            f"SQLite store {path!r} was written by a newer Tether (schema migration "
            f"{unknown[-1]:04d}, which this version does not know); upgrade tether to "
            "use it")
    return "behind" if known - applied - compatible else "current"


def translate_error(exc: apsw.Error, path: str) -> StoreError:
    """Tether's error for an apsw error: nothing above the store sees apsw."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, (apsw.BusyError, apsw.LockedError)):
        return StoreUnavailable(f"SQLite store {path!r} is locked: {first}")
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return StoreError(
            f"SQLite store {path!r} is corrupt or not a database ({first}); restore it "
            "from a backup")
    if isinstance(exc, apsw.CantOpenError) and _on_read_only_mount(path):
        # A mistake no wait fixes (as a folder that is not writable, below): SQLite
        # could not create the ``-shm`` a WAL database needs even to be read, and said
        # only "unable to open database file".
        return StoreError(f"SQLite store {path!r} failed: {first}{_why_read_only(path)}")
    if isinstance(exc, (apsw.FullError, apsw.IOError, apsw.CantOpenError,
                        apsw.ProtocolError)):
        return StoreUnavailable(f"SQLite store {path!r} failed: {first}")
    if isinstance(exc, apsw.ReadOnlyError):
        return StoreError(f"SQLite store {path!r} is open read-only: {first}"
                          f"{_why_read_only(path)}")
    return StoreError(f"SQLite store {path!r} failed: {first}")


def _why_read_only(path: str) -> str:
    """Why SQLite could not write ``path``, when this process can tell: the file, or
    its folder (SQLite writes ``-wal`` and ``-shm`` files beside it, and a folder made
    read-only by mistake reads as "attempt to write a readonly database" with the file's
    own mode fine)."""
    if not path or path == ":memory:" or not os.path.exists(path):
        return ""
    if _on_read_only_mount(path):  # (before access(): it says no to root there too)
        return (f" (it is on a read-only file system, and SQLite writes the files "
                f"{os.path.basename(path)}-wal and -shm beside the database even to read "
                "it: mount it read-write, or copy the file to a writable folder)")
    if not os.access(path, os.W_OK, effective_ids=True):
        return " (this user may not write the file: give it write permission)"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK, effective_ids=True):
        return (f" (its folder {folder} is not writable, and SQLite writes the files "
                f"{os.path.basename(path)}-wal and -shm beside the database: make the "
                "folder writable for this user)")
    return ""


def _on_read_only_mount(path: str) -> bool:
    """Whether the folder of ``path`` (an existing file) is on a file system mounted
    read-only."""
    try:
        folder = os.path.dirname(os.path.abspath(path))
        return bool(os.path.exists(path) and os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _auto_migrate_env() -> bool:
    return os.environ.get("TETHER_AUTO_MIGRATE", "1").strip().lower() not in (
        "0", "false", "no", "off")


#: The options a sqlite URL may carry (``?synchronous=normal``); any other is refused.
URL_OPTIONS = ("synchronous", "migrate", "mode")


def _flag(opts: dict[str, list[str]], name: str, default: bool) -> bool:
    if name not in opts:
        return default
    text = opts[name][-1].strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"sqlite URL option {name}={opts[name][-1]!r}: use true or false")


class SqliteStore(SqliteServeQueries):
    """Embedded store on one SQLite file; several processes on one host may share it.

    Args:
        url: ``sqlite:///path.db`` with optional ``?synchronous=normal`` and
            ``?migrate=false``.
        synchronous: ``full`` (default), ``normal`` or ``extra``; the same as the URL
            option.
        migrate: create and migrate the tables on ``open()`` (default; also off with
            ``?migrate=false`` or ``TETHER_AUTO_MIGRATE=0``). When off, ``open()`` raises
            ConfigError if the file's schema is behind; ``tether db migrate`` brings it up.
        busy_timeout: seconds to wait for another process's write lock.
        read_only: open an existing store for reading only: nothing is created,
            migrated or written (the file's bytes stay as they are); writes raise
            StoreError. Also ``?mode=ro`` in the URL.
        create: set up a new store where no file (or an empty one) exists, even with
            ``migrate`` off (default: as ``migrate``). An existing store's older schema
            is still only migrated when ``migrate`` is on.
        vfs: the name of a registered SQLite VFS to open the file with (fault
            injection: the chaos suite's power-loss shim). Such a VFS may lack shared
            memory, so the connection takes the file in exclusive locking mode: one
            process only.

    A file that exists but is not a Tether store (another program's database, or not
    a database at all) is never changed: ``open()`` raises ConfigError. So does a store
    written by a newer Tether (a migration this code does not know), unless that
    migration is marked compatible (``COMPATIBLE_MARK``).
    """

    capabilities = StoreCapabilities(notifications=True, multi_host=False, ordered_writes=True,
                                     attempts_from_journal=True)

    def __init__(self, url: str, *, synchronous: str | None = None,
                 busy_timeout: float = 30.0, migrate: bool | None = None,
                 read_only: bool = False, create: bool | None = None,
                 vfs: str | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "sqlite":
            raise ConfigError(f"not a sqlite URL: {url!r}")
        path = parsed.path
        if parsed.netloc:  # sqlite://relative/path.db
            path = parsed.netloc + path
        elif path.startswith("/./") or path.startswith("/../"):
            path = path[1:]
        elif path.startswith("//"):  # sqlite:////abs/path.db: the same file, said once
            path = "/" + path.lstrip("/")
        if not path or path == "/":
            raise ConfigError(f"sqlite URL names no file: {url!r}")
        opts = parse_qs(parsed.query)
        unknown = sorted({name for name, _ in parse_qsl(parsed.query, keep_blank_values=True)}
                         - set(URL_OPTIONS))
        if unknown:
            # As a PostgreSQL URL's: a misspelt option (``?synchronus=normal``) or one
            # that is not a URL option (``?read_only=true``, ``?busy_timeout=60``) is not
            # ignored while the store does something else than asked.
            raise ConfigError(
                f"sqlite URL option{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(name) for name in unknown)} not known: a sqlite URL takes "
                f"{', '.join(URL_OPTIONS)} (the store's other options are keywords of "
                f"App() and open_store(): busy_timeout, read_only, create): {url!r}")
        sync = (synchronous or opts.get("synchronous", ["full"])[0]).upper()
        if sync not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError(f"synchronous must be full, normal or extra, not {sync!r}")
        url_migrate = _flag(opts, "migrate", True)
        self.auto_migrate = (url_migrate if migrate is None else migrate) and url_migrate \
            and _auto_migrate_env()
        mode = opts.get("mode", ["rw"])[-1].strip().lower()
        if mode not in ("rw", "ro"):
            raise ConfigError(f"sqlite URL option mode={mode!r}: use rw or ro")
        self.read_only = read_only or mode == "ro"
        self.vfs = vfs
        self.create = (self.auto_migrate if create is None else create) and not self.read_only
        self.url = url
        self.path = path
        self.synchronous = sync
        self.busy_timeout = busy_timeout
        self.sqlite_version = apsw.sqlite_lib_version()
        self.safe_multiprocess = (
            tuple(int(p) for p in self.sqlite_version.split(".")) >= SAFE_MULTIPROCESS_VERSION
        )
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._notifier = Notifier(os.path.abspath(path))
        self._events = EventBus(self._notifier.folder)
        self._thread: threading.Thread | None = None
        self._closed = False
        #: The closing, once begun (it outlives a cancelled ``close``).
        self._shutdown: asyncio.Future[None] | None = None
        self._pending = 0
        self._count = threading.Lock()
        #: Held by whoever uses the writer's connection: the writer thread for a batch,
        #: the caller's thread for an inline append or read (``_call_inline``).
        self._conn_lock = threading.Lock()
        self._conn: apsw.Connection | None = None
        self._inline_cost = 0.001  # seconds, a running mean of inline commits
        self._turns = LoopTurns()  # when an inline append last yielded to the loop
        #: Writes of each event loop gathered in its current pass (journal appends, runs'
        #: ends, attempt histories), committed together at the start of the next one
        #: (``_flush_group``).
        self._groups: dict[asyncio.AbstractEventLoop, list[Op]] = {}
        #: The file the writer's connection opened (device, inode), and when it was last
        #: compared with what the path names now (``_file_gone``).
        self._file_id: tuple[int, int] | None = None
        self._file_checked = 0.0
        self._file_error: StoreUnavailable | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(loop, ready), name="tether-sqlite", daemon=True
        )
        self._thread.start()
        await ready

    async def close(self) -> None:
        """Write what is queued, stop the writer thread and the notifications.

        A caller cancelled meanwhile (a timeout around ``close``) is cancelled at once,
        and the closing goes on by itself; calling ``close`` again waits for it."""
        if self._shutdown is None:
            if self._thread is None or self._closed:
                return
            for loop in list(self._groups):  # appends gathered and not yet flushed first
                self._hand_over(self._groups.pop(loop, []))
            self._closed = True
            self._queue.put(None)
            self._shutdown = asyncio.ensure_future(self._shut_down(self._thread))
        await asyncio.shield(self._shutdown)

    async def _shut_down(self, thread: threading.Thread) -> None:
        try:
            await asyncio.to_thread(thread.join)
        finally:
            self._notifier.close()
            self._events.close()

    def _connect(self, *, migrate: bool | None = None) -> apsw.Connection:
        """Open the file, check it is a Tether store this code can use, and bring it to
        WAL mode and the current schema (unless read-only). Waits up to ``busy_timeout``
        on another process's lock at every step: a store that another process is
        creating or migrating at this moment is a wait, not an error."""
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            # A configuration mistake, not an outage: waiting would not fix it.
            raise ConfigError(f"cannot open SQLite store {self.path!r}: no folder {folder}")
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                if migrate is None:
                    return self._connect_once(self.auto_migrate, self.create)
                return self._connect_once(migrate, migrate)
            except (apsw.BusyError, apsw.LockedError) as exc:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"SQLite store {self.path!r} stayed locked for {self.busy_timeout:g} s "
                        "while opening") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            except apsw.Error as exc:
                raise translate_error(exc, self.path) from exc

    def _connect_once(self, migrate: bool, create: bool) -> apsw.Connection:
        if not os.path.exists(self.path):
            if self.read_only:
                raise ConfigError(f"no Tether store at {self.path} (nothing was created)")
            if not create:
                raise ConfigError(
                    f"no Tether store at {self.path} and auto-migration is off; run "
                    f"`tether db migrate --db {self.url}` to create it")
            _create_private(self.path)
        conn = self._open_file()
        try:
            state = _schema_state(conn, self.path)
            if self.read_only:
                if state == "new":
                    raise ConfigError(f"{self.path} is an empty file, not a Tether store yet")
                conn.execute("PRAGMA query_only=ON")
            else:
                # Switching to WAL takes the file's exclusive lock and does not use the
                # busy handler: a BusyError here goes round the caller's wait loop.
                mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
                if str(mode).lower() != "wal":
                    mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
                if str(mode).lower() != "wal":
                    raise StoreUnavailable(
                        f"SQLite store {self.path!r} cannot use WAL mode ({mode})")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.execute("PRAGMA temp_store=MEMORY")
            if not self.read_only:
                _check_parameter_limit(conn, self.path)
            if state == "new" and not create:
                raise ConfigError(
                    f"{self.path} is an empty file and auto-migration is off; run "
                    f"`tether db migrate --db {self.url}` to set it up")
            if state == "behind" and (self.read_only or not migrate):
                behind = [f"{v:04d}_{name}" for v, name, applied in _status(conn)
                          if not applied]
                raise ConfigError(
                    f"SQLite store {self.path!r} has an older schema (pending: "
                    f"{', '.join(behind)}); run `tether db migrate --db {self.url}` "
                    "(a worker also migrates it)")
            if state != "current" and not self.read_only:
                # A new file is always set up; an older schema only when allowed to.
                self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_file(self) -> apsw.Connection:
        """Every connection to the store's file, the writer's and the readers' of
        migration status, is opened here: through the VFS asked for, waiting up to
        ``busy_timeout`` on another process's lock.

        Read-write even for a reader (whose writes ``PRAGMA query_only`` refuses): a
        reading connection that is the file's last one then removes the -wal and -shm
        files it needed at close, leaving the folder as it found it. No
        SQLITE_OPEN_CREATE: the file exists (``_create_private`` made it, mode 0600); a
        vanished file is an error, not a new one.

        Raises: StoreUnavailable if the file cannot be opened.
        """
        flags = apsw.SQLITE_OPEN_READWRITE
        try:
            if self.vfs is not None:
                conn = apsw.Connection(self.path, flags=flags, vfs=self.vfs)
            else:
                conn = apsw.Connection(self.path, flags=flags)
        except apsw.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self.path!r}: {exc}") from exc
        try:
            if self.vfs is not None:
                # Such a VFS may lack shared memory: one process only.
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.setbusytimeout(int(self.busy_timeout * 1000))
        except apsw.Error as exc:
            conn.close()
            raise StoreUnavailable(f"cannot open SQLite store {self.path!r}: {exc}") from exc
        return conn

    def _migrate(self, conn: apsw.Connection) -> list[str]:
        """Apply pending migrations in one write transaction (other processes wait on
        the file's lock, then find nothing to do); return their names."""
        applied: list[str] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(Q["schema_version_create"])
            conn.execute(Q["schema_compatible_create"])
            done = set().union(*_applied(
                conn, {"tether_schema_version", "tether_schema_compatible"}))
            for version, name, sql in load_migrations("tether.store.sqlite"):
                if version in done:
                    continue
                conn.execute(sql)
                record = ("schema_compatible_insert" if is_compatible(sql)
                          else "schema_version_insert")
                conn.execute(Q[record],
                             {"version": version, "name": name, "applied_at": time.time()})
                applied.append(f"{version:04d}_{name}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return applied

    async def migrate(self) -> list[str]:
        """Apply pending migrations (open or not); return the names applied. Creates the
        store (mode 0600) where no file exists; refuses a file that is not a Tether store
        or that a newer Tether wrote.

        Raises: ConfigError, StoreUnavailable, StoreError.
        """
        def go() -> list[str]:
            if self.read_only:
                raise ConfigError("a read-only store cannot be migrated")
            before = {v for v, _, applied in self._status_now() if applied}
            conn = self._connect(migrate=True)
            try:
                after = [(v, name) for v, name, applied in _status(conn) if applied]
            finally:
                conn.close()
            return [f"{v:04d}_{name}" for v, name in after if v not in before]

        return await asyncio.to_thread(go)

    def _status_now(self) -> list[tuple[int, str, bool]]:
        if not os.path.exists(self.path):
            return [(v, name, False) for v, name, _ in load_migrations(_PACKAGE)]
        conn = self._open_file()
        try:
            conn.execute("PRAGMA query_only=ON")
            _schema_state(conn, self.path)  # refuses foreign files and newer schemas
            return _status(conn)
        except apsw.Error as exc:
            raise translate_error(exc, self.path) from exc
        finally:
            conn.close()

    async def backup(self, target: str) -> int:
        """Copy the store into the new file ``target`` (mode 0600) while workers go on
        writing to it, with SQLite's online backup API: the copy is the store as one
        read transaction saw it (WAL mode: writers are not held up meanwhile), checked
        (``PRAGMA quick_check``), then given its name. A plain copy of the file (``cp``)
        of a live store may miss what the ``-wal`` file holds, or copy pages of two
        moments. Returns the copy's size in bytes.

        Raises: ConfigError (no store there, not a Tether store, ``target`` exists),
        StoreUnavailable (the store stayed locked), StoreError (the copy is not sound).
        """
        return await asyncio.to_thread(self._backup, target)

    def _backup(self, target: str) -> int:
        check_target(target)
        if not os.path.exists(self.path):
            raise ConfigError(f"no Tether store at {self.path}")
        source = self._open_file()
        try:
            if _schema_state(source, self.path) == "new":
                raise ConfigError(f"{self.path} is an empty file, not a Tether store yet")
            with partial_file(target) as partial:
                try:
                    copy = apsw.Connection(partial)
                    try:
                        with copy.backup("main", source, "main") as step:
                            # All pages in one step: one read transaction, one moment.
                            step.step(-1)
                        found = copy.execute("PRAGMA quick_check").fetchall()
                    finally:
                        copy.close()
                except apsw.Error as exc:
                    raise translate_error(exc, self.path) from exc
                if found != [("ok",)]:
                    raise StoreError(f"the backup of {self.path!r} failed its check "
                                     f"({found[0][0] if found else 'no answer'}); it is "
                                     "not kept")
                return os.path.getsize(partial)
        finally:
            source.close()

    async def restore(self, backup: str, *, force: bool = False) -> RestoreResult:
        """Restore the backup file ``backup`` (``tether db backup`` of a SQLite store)
        into this store's file, which need not exist; the store must not be open. The
        copy is made with SQLite's backup API in one transaction (a reader sees the old
        store or the restored one); a backup of an older schema is migrated as it is
        restored, unless auto-migration is off (then ``pending`` names what ``tether db
        migrate`` will apply). See ``tether.store.sqlite._restore``.

        Raises: RestoreRefused (nothing changed: not a Tether backup, a newer schema, a
        target that holds runs or schedules without ``force``, a target in use by a
        worker or server, a target that is not a Tether store), ConfigError, StoreError.
        """
        from tether.store.sqlite._restore import restore

        if self._thread is not None:
            raise ConfigError("close the store before restoring into it")
        return await asyncio.to_thread(restore, self, backup, force=force)

    async def migration_status(self) -> list[tuple[int, str, bool]]:
        """(version, name, applied?) for every migration this code knows; a file that
        does not exist yet has every one pending (and is not created).

        Raises: ConfigError (not a Tether store, or a newer one), StoreUnavailable.
        """
        return await asyncio.to_thread(self._status_now)

    # -- the writer thread ------------------------------------------------------------

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            err = exc if isinstance(exc, (StoreError, ConfigError)) else StoreUnavailable(
                f"cannot open SQLite store {self.path!r}: {exc}")
            failed: list[Outcome] = [
                (ready, None, err)]
            # Forgotten before the failure is told: an open() after it (the next call
            # that needs the store) saw this thread still set, returned as if the store
            # were open, and its first operation waited for ever for a thread that had
            # gone (seen: `tether mcp` on a store it cannot open, 1 tasks/get in 19).
            self._thread = None
            loop.call_soon_threadsafe(deliver, failed)
            return
        self._conn = conn
        if self.vfs is None:  # (another VFS need not keep its data in that file)
            with contextlib.suppress(OSError):
                st = os.stat(self.path)
                self._file_id = (st.st_dev, st.st_ino)
        ok: list[Outcome] = [(ready, None, None)]
        loop.call_soon_threadsafe(deliver, ok)
        q = self._queue
        try:
            while True:
                op = q.get()
                if op is None:
                    break
                batch = [op]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        nxt = q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                with self._conn_lock:
                    results = self._execute(conn, batch)
                    with self._count:  # done: an inline append may follow it now
                        self._pending -= len(batch)
                self._answer(results)
                if stop:
                    break
        finally:
            with self._conn_lock:
                self._conn = None
                with contextlib.suppress(Exception):
                    conn.close()

    def _execute(self, conn: apsw.Connection, batch: list[Op], *,
                 wait_busy: bool = True) -> list[tuple[Op, Any, BaseException | None]]:
        """Run ``batch`` in one transaction: each operation's value or error. Another
        process's write lock is waited for (up to ``busy_timeout``; an operation with a
        ``deadline``, a request's, until then, and it alone fails then, nothing of it
        done), or with ``wait_busy`` off raises ``_Busy`` at once, nothing done."""
        gone = self._file_gone()
        if gone is not None:
            return [(op, None, gone) for op in batch]
        write = any(op.write for op in batch)
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        # One atomic operation alone (a sequential run's journal append) is its own
        # transaction: SQLite commits the statement by itself, with the same fsync.
        alone = len(batch) == 1 and batch[0].atomic
        # So is a batch of journal appends alone (concurrent runs' steps): one statement.
        appends = (not alone and len(batch) <= _APPEND_CHUNK
                   and all(op.fn is _journal_append for op in batch))
        given_up: list[tuple[Op, Any, BaseException | None]] = []
        bounded = False  # whether the connection's busy handler waits less than usual
        while True:
            if wait_busy and (bounded or any(op.deadline is not None for op in batch)):
                # SQLite's busy handler waits inside the statement that meets the lock:
                # no longer than the first deadline of the batch.
                until = min([deadline, *(op.deadline for op in batch if op.deadline)])
                conn.setbusytimeout(max(int((until - time.monotonic()) * 1000), 1))
                bounded = True
            results: list[tuple[Op, Any, BaseException | None]] = []
            try:
                if alone:
                    op = batch[0]
                    results.append((op, *self._call_alone(conn, op.fn, *op.args)))
                    break
                if appends:
                    written = _appends_alone(conn, batch)
                    if written is not None:
                        results = written
                        break
                    appends = False  # one was refused: in a transaction, each says why
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                single = len(batch) == 1
                i = 0
                while i < len(batch):
                    op = batch[i]
                    i += 1
                    chunked = None if single else _chunk_writer(op.fn)
                    if chunked is not None:
                        # Consecutive operations of one kind (journal appends, runs'
                        # ends): one statement per chunk (the order of the queue is
                        # kept: other operations break a chunk).
                        j = i
                        while (j < len(batch) and j - i < _APPEND_CHUNK - 1
                               and batch[j].fn is op.fn):
                            j += 1
                        if j > i:
                            results.extend(chunked(conn, batch[i - 1:j], self._foreign))
                            i = j
                            continue
                    if single or not op.write or op.atomic:
                        try:
                            results.append((op, op.fn(conn, *op.args), None))
                        except apsw.BusyError:
                            raise
                        except Exception as exc:
                            if isinstance(exc, apsw.Error) and conn.getautocommit():
                                raise  # SQLite rolled the whole batch back: all fail
                            results.append((op, None, self._foreign(exc)))
                        continue
                    results.append(_in_savepoint(conn, op, self._foreign))
                if single and results[0][2] is not None:
                    conn.execute("ROLLBACK")
                else:
                    conn.execute("COMMIT")
                break
            except apsw.BusyError:
                with contextlib.suppress(apsw.Error):
                    if not conn.getautocommit():
                        conn.execute("ROLLBACK")
                if not wait_busy:
                    raise _Busy() from None
                now = time.monotonic()
                if now > deadline:
                    locked = StoreUnavailable(f"SQLite store {self.path!r} stayed locked")
                    results = [(op, None, locked) for op in batch]
                    break
                late = [op for op in batch if op.deadline is not None and op.deadline <= now]
                if late:
                    # (A request to `tether serve`: its 503 now, the others wait on.)
                    locked = StoreUnavailable(
                        f"SQLite store {self.path!r} is locked by another process's "
                        "write: gave up waiting for it")
                    given_up += [(op, None, locked) for op in late]
                    batch = [op for op in batch if op.deadline is None or op.deadline > now]
                    if not batch:
                        break
                    alone = alone or (len(batch) == 1 and batch[0].atomic)
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            except apsw.Error as db_exc:
                with contextlib.suppress(apsw.Error):
                    if not conn.getautocommit():
                        conn.execute("ROLLBACK")
                err = translate_error(db_exc, self.path)
                err.__cause__ = db_exc
                results = [(op, None, err) for op in batch]
                break
        if bounded:
            with contextlib.suppress(apsw.Error):
                conn.setbusytimeout(int(self.busy_timeout * 1000))
        return given_up + results if given_up else results

    def _file_gone(self) -> StoreUnavailable | None:
        """The error every operation gets while the store's path no longer names the
        file the writer's connection opened (deleted, moved away or replaced): SQLite
        would go on writing to the open file, a run would complete in it, and all of it
        would be lost when the process exits, with nothing said. Compared at most once a
        second (one ``stat``), under the connection's lock."""
        if self._file_id is None:
            return None
        now = time.monotonic()
        if now - self._file_checked < _FILE_CHECK_EVERY:
            return self._file_error
        self._file_checked = now
        try:
            st = os.stat(self.path)
            same = (st.st_dev, st.st_ino) == self._file_id
        except OSError:
            same = False
        if same:
            self._file_error = None
        elif self._file_error is None:
            log.error("SQLite store %s was deleted, moved or replaced while this process had "
                      "it open: nothing more is written to it (what this process wrote "
                      "since is in the old file only); restart the process", self.path)
            self._file_error = StoreUnavailable(
                f"SQLite store {self.path!r} was deleted, moved or replaced while this "
                "process had it open; nothing more is written to it: restart the process")
        return self._file_error

    def _answer(self, results: list[tuple[Op, Any, BaseException | None]], *,
                here: bool = False) -> None:
        """Once a batch committed (or not): wake the workers if it may have made a run
        claimable, and resolve each caller's future on its loop (``here``: the calling
        thread's loop, that of every operation: at once)."""
        if any(op.wake for op, _, failure in results if failure is None):
            self._notifier.publish()
        if here:
            deliver([(op.future, value, failure) for op, value, failure in results])
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for op, value, failure in results:
            by_loop.setdefault(op.loop, []).append((op.future, value, failure))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(deliver, items)

    def _foreign(self, exc: Exception) -> Exception:
        if not isinstance(exc, apsw.Error):
            return exc
        err = translate_error(exc, self.path)
        err.__cause__ = exc
        return err

    @property
    def outages(self) -> int:
        """0: a file has no server to lose (a failing write tells the worker itself)."""
        return 0

    async def subscribe(self, callback: Callable[[], None], *,
                        on_cancel: Callable[[str], None] | None = None,
                        ) -> Callable[[], Awaitable[None]]:
        return self._notifier.subscribe(asyncio.get_running_loop(), callback, on_cancel)

    # -- runs -------------------------------------------------------------------------

    async def run_insert(self, *, run: RunRecord) -> tuple[RunRecord, bool]:
        return await self._write_wake(_run_insert, run)

    async def run_get(self, run_id: str) -> RunRecord | None:
        done, run = self._call_inline(_run_get, run_id)
        if done:
            return run  # type: ignore[no-any-return]
        return await self._read(_run_get, run_id)

    async def run_get_many(self, run_ids: list[str], *,
                           settled_only: bool = False) -> list[RunRecord]:
        if not run_ids:
            return []
        if len(run_ids) <= _INLINE_READ_MAX:
            done, runs = self._call_inline(_run_get_many, tuple(run_ids), settled_only)
            if done:
                return runs  # type: ignore[no-any-return]
        if len(run_ids) <= _GROUP_READ_MAX:  # (behind this loop's gathered writes)
            return await self._grouped(_run_get_many, (tuple(run_ids), settled_only),
                                       wake=False, atomic=True, write=False)
        return await self._read(
            _run_get_many, tuple(run_ids), settled_only)

    def _call_inline(self, fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """Run one atomic operation on the calling thread, on the writer's connection
        (under its lock: the writer thread cannot start a batch meanwhile), when the
        writer thread is idle (nothing queued or in flight, so no transaction is open on
        it): (True, its value). A write is its own autocommit transaction, with the same
        fsync as the writer thread's. An operation queued for the writer thread costs a
        hand-over to it and back to the loop, ~10 times a small read itself (a caller
        reading results one after the other, ``for h in handles: await h.result()``,
        spent a fifth of a 1,000-run workload there). (False, None): not done (writer
        busy, store closing, a lock held by another process, tried without waiting);
        queue it. Its error is raised as the writer thread reports it."""
        if self._pending or self._closed or not self._conn_lock.acquire(blocking=False):
            return False, None
        try:
            conn = self._conn
            if conn is None or self._pending or self._closed:
                return False, None
            gone = self._file_gone()  # (the writer thread's batches: in _execute)
            if gone is not None:
                raise gone
            conn.setbusytimeout(0)  # a lock held elsewhere: the writer thread waits
            try:
                value, failure = self._call_alone(conn, fn, *args)
            except apsw.BusyError:
                return False, None
            finally:
                conn.setbusytimeout(int(self.busy_timeout * 1000))
            if failure is not None:
                raise failure
            return True, value
        finally:
            self._conn_lock.release()

    async def run_insert_many(self, *, runs: list[RunRecord]) -> list[tuple[RunRecord, bool]]:
        if not runs:
            return []
        return await self._write_wake(_run_insert_many, runs)

    async def run_list(self, *, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        limit = max(0, min(limit, 2**62))  # SQLite integers are 64-bit
        return await self._read(_run_list, status, limit)

    async def run_list_unsettled(self, *, limit: int = 100) -> list[RunRecord]:
        limit = max(0, min(limit, 2**62))  # SQLite integers are 64-bit
        return await self._read(_run_list_unsettled, limit)

    async def journal_read(self, run_id: str) -> list[JournalEntry]:
        return await self._read(_journal_read, run_id)

    async def run_claim(self, *, worker_id: str, queues: list[str], limit: int, now: float,
                        lease_seconds: float, workflows: list[str] | None = None,
                        version: str | None = None,
                        exclude: Collection[str] = (),
                        takeover_before: float | None = None) -> list[ClaimedRun]:
        if limit <= 0 or not queues or workflows == []:
            return []
        args = (worker_id, tuple(queues), limit, now, now + lease_seconds,
                {**_filter(workflows, version, exclude), "takeover_before": takeover_before})
        if limit <= _GROUP_INLINE_MAX:
            # Grouped (see _group_append): the claims a worker makes as its runs end
            # would otherwise keep the writer thread busy, and the loop's groups with it.
            return await self._grouped(_run_claim, args, wake=False, atomic=False)
        return await self._write(_run_claim, *args)

    def _call_alone(self, conn: apsw.Connection, fn: Callable[..., Any],
                    *args: Any) -> tuple[Any, Exception | None]:
        """Run one atomic operation as its own (autocommit) transaction: its result, or
        its error as callers see it (``_foreign``) with nothing left open. The writer
        thread's lone operation and an inline one (``_call_inline``) both go through here.
        ``apsw.BusyError`` (another process holds the write lock) propagates."""
        try:
            return fn(conn, *args), None
        except Exception as exc:
            with contextlib.suppress(apsw.Error):
                if not conn.getautocommit():  # not expected: undo what is open
                    conn.execute("ROLLBACK")
            if isinstance(exc, apsw.BusyError):
                raise
            return None, self._foreign(exc)

    async def journal_append(self, *, lease: Lease, entry: JournalEntry,
                             metrics: str | None = None, now: float = 0.0,
                             blobs: Mapping[str, str] | None = None) -> None:
        fn: Callable[..., bool | None]
        args: tuple[Any, ...]
        if metrics is None and not blobs:
            fn, args = _journal_append, (lease, entry)
        else:  # the texts, the run's metrics, then the entry: one transaction
            if metrics is not None:
                check_metrics(lease.run_id, metrics)
            fn, args = _journal_append_with, (lease, entry, metrics, now,
                                               json.dumps(blobs) if blobs else None)
        # Inline when the loop is quiet (_append_inline), else in its group (_group_append).
        done, written = self._commit_inline(fn, *args)
        if done:
            if self._turns.due():  # let the loop poll its sockets now and then
                await asyncio.sleep(0)
        else:
            written = await self._grouped(fn, args, wake=False, atomic=True)
        if written is False:  # (metered: a final entry holds the position, metrics kept)
            raise final_conflict(lease.run_id, entry.position)

    def _group_append(self, lease: Lease, entry: JournalEntry) -> asyncio.Future[None]:
        """Gather the append with the others this event loop makes in its current pass;
        the first schedules their commit (``_flush_group``) for the start of the next.

        Concurrent runs' steps end in bursts (100 runs awaiting model calls of the same
        latency): the loop runs every step that ended, each queueing its append, while
        the writer thread waits for the GIL. Sent one by one, the writer's batch then
        began only once the loop was idle, every run of the burst waited for all the
        others' work on both sides of one commit, and the runs stayed in step. A group
        the loop commits itself is there at once, with no hand-over to the writer
        thread and back, and runs that end later join a later group: the bursts spread
        out."""
        return self._grouped(_journal_append, (lease, entry), wake=False, atomic=True)

    def _grouped(self, fn: Callable[..., T], args: tuple[Any, ...], *, wake: bool,
                 atomic: bool, write: bool = True) -> asyncio.Future[T]:
        """An operation gathered into this loop's group (``_group_append``): a write of
        one atomic statement, or one that runs in a savepoint of its own, or a read
        (``write`` off); ``wake``: tell the workers once it committed."""
        op = self._op(fn, args, write=write, wake=wake, atomic=atomic)
        group = self._groups.get(op.loop)
        if group is None:
            group = self._groups[op.loop] = []
            op.loop.call_soon(self._flush_group, op.loop)
        group.append(op)
        return op.future

    def _flush_group(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit the operations ``loop`` gathered (on its thread, called by it): on the
        writer's connection under its lock when the writer thread is idle and the group
        is small (``_GROUP_INLINE_MAX``), the callers' futures resolved directly;
        otherwise (writer busy, another process's write lock, store closing) they go to
        the writer thread in their order."""
        group = self._groups.pop(loop, None)
        if not group:
            return
        results = None
        if (len(group) <= _GROUP_INLINE_MAX and not self._pending and not self._closed
                and self._conn_lock.acquire(blocking=False)):
            try:
                conn = self._conn
                if conn is not None and not self._pending and not self._closed:
                    conn.setbusytimeout(0)  # another process's lock: the writer waits
                    try:
                        results = self._execute(conn, group, wait_busy=False)
                    except _Busy:
                        results = None
                    except Exception as exc:  # not expected: each caller hears of it
                        results = [(op, None, exc) for op in group]
                    finally:
                        conn.setbusytimeout(int(self.busy_timeout * 1000))
            finally:
                self._conn_lock.release()
        if results is None:
            if self._closed:  # (closed from another thread since: close() flushes first)
                closed = StoreError("store is not open")
                deliver([(op.future, None, closed) for op in group])
            else:
                self._hand_over(group)
            return
        self._answer(results, here=True)

    def _append_inline(self, lease: Lease, entry: JournalEntry) -> bool:
        """``_commit_inline`` of a plain journal append: whether it was committed."""
        return self._commit_inline(_journal_append, lease, entry)[0]

    def _commit_inline(self, fn: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
        """Commit a journal append on the calling (event loop's) thread when the writer
        thread is idle (nothing queued or in flight) and the loop has nothing else ready
        to run: a sequential run's step then costs no hand-over to the writer thread and
        back. Same connection (under its lock: the writer cannot start a batch
        meanwhile), same autocommit statement, same fsync: the entry is durable when
        this returns (True, its value). Errors are raised as the writer thread reports
        them. (False, None): not done (busy writer, other work ready, another process's
        write lock, an event loop without a ready queue to look at); queue it as usual.
        ``fn``: ``_journal_append`` or ``_journal_append_with``."""
        if self._pending or self._closed:
            return False, None
        # (A timer falling due during the commit: it joins a group instead.)
        if not loop_quiet(self._running_loop(), self._inline_cost):
            return False, None
        t0 = time.perf_counter()
        done, value = self._call_inline(fn, *args)
        if done:  # what an inline commit takes (fsync included), for the timer rule
            self._inline_cost += (time.perf_counter() - t0 - self._inline_cost) / 8
        return done, value

    def journal_append_nowait(self, *, lease: Lease, entry: JournalEntry) -> asyncio.Future[None]:
        """Queue a journal write without waiting; the future reports its outcome."""
        return self._write_atomic(_journal_append, lease, entry)

    async def run_finish(self, *, lease: Lease, status: str, result: str | None,
                         error: str | None, now: float) -> str:
        # Grouped like appends: the ends of runs that finish together (see _group_append).
        return await self._grouped(_run_finish, (lease, status, result, error, now),
                                   wake=True, atomic=False)

    async def run_release(self, *, lease: Lease, wait: Wait, now: float) -> None:
        limited = await self._write(_run_release, lease, wait, now)
        if limited or (wait.available_at is not None and wait.available_at <= now):
            # A place on a limited queue is free, or the run is claimable at once.
            self._notifier.publish()

    async def run_cancel(self, *, run_id: str, now: float,
                         reason: str | None = None) -> RunRecord:
        run: RunRecord = await self._write_wake(_run_cancel, run_id, now, reason)
        if run.status == "running":  # its worker interrupts it now, not at a heartbeat
            self._notifier.publish_cancel(run_id)
        return run

    async def run_resume(self, *, run_id: str, now: float) -> RunRecord:
        return await self._write_wake(_run_resume, run_id, now)

    async def run_set_status_info(self, *, lease: Lease, info: str | None, now: float) -> None:
        await self._write(_run_set_status_info, lease, info, now)

    async def signal_send(self, *, run_id: str, name: str, payload: str | None,
                          idempotency_key: str | None, now: float) -> SignalSent:
        return await self._write_wake(
            _signal_send, run_id, name, payload, idempotency_key, now
        )

    async def signal_find(self, *, run_id: str, idempotency_key: str) -> SignalSent | None:
        return await self._read(_signal_find, run_id, idempotency_key)

    async def signal_pending(self, *, run_id: str, name: str) -> bool:
        return await self._read(_signal_pending, run_id, name)

    async def signal_take(self, *, lease: Lease, name: str, position: int,
                          deadline: float | None, now: float,
                          timeout_error: str, sent_by: float | None = None,
                          clock_now: float | None = None) -> JournalEntry | None:
        return await self._write(_signal_take, lease, name, position, deadline, now,
                                 timeout_error, sent_by, clock_now)

    async def child_start(self, *, lease: Lease, child: RunRecord,
                          entry: JournalEntry) -> RunRecord:
        return await self._write_wake(_child_start, lease, child, entry)

    async def run_children_cancel(self, *, parent_run_id: str, now: float) -> list[str]:
        return await self._write_wake(
            _run_children_cancel, parent_run_id, now
        )

    # -- leases and workers -------------------------------------------------------------

    async def lease_heartbeat(self, *, worker_id: str, now: float,
                              lease_seconds: float) -> HeartbeatResult:
        return await self._write(
            _lease_heartbeat, worker_id, now, now + lease_seconds
        )

    async def lease_expire_owner(self, *, worker_id: str, now: float) -> list[str]:
        return await self._write_wake(_lease_expire_owner, worker_id, now)

    async def worker_register(self, *, info: WorkerInfo) -> None:
        await self._write(_worker_register, info)

    async def worker_unregister(self, *, worker_id: str, now: float) -> None:
        await self._write_wake(_worker_unregister, worker_id, now)

    async def worker_list(self) -> list[WorkerInfo]:
        return await self._read(_worker_list)

    async def worker_runs_held(self) -> dict[str, int]:
        return await self._read(_worker_runs_held)

    async def workflow_register(self, *, workflows: dict[str, str], now: float) -> None:
        await self._write(_workflow_register, dict(workflows), now)

    async def workflow_list(self) -> dict[str, str]:
        return await self._read(_workflow_list)

    async def next_available_at(self, *, queues: list[str], workflows: list[str] | None = None,
                                version: str | None = None,
                                exclude: Collection[str] = ()) -> float | None:
        if not queues or workflows == []:
            return None
        found: float | None = await self._grouped(
            _next_available_at, (tuple(queues), _filter(workflows, version, exclude)),
            wake=False, atomic=True, write=False)
        return found

    async def run_activity(self, *, queues: list[str], now: float
                           ) -> tuple[bool, float | None]:
        found: tuple[bool, float | None] = await self._read(_run_activity, tuple(queues), now)
        return found

    # -- shared state for the AI layer and limits (migration 0002) ---------------------

    async def run_metrics_set(self, *, lease: Lease, metrics: str, now: float) -> None:
        check_metrics(lease.run_id, metrics)
        # Grouped like appends (see _group_append): a durable LLM call writes its run's
        # metrics and its prompt's texts once per call.
        await self._grouped(_run_metrics_set, (lease, metrics, now), wake=False,
                            atomic=True)

    async def blob_put(self, *, blobs: dict[str, str], run_id: str | None = None) -> None:
        if blobs:
            await self._grouped(_lc.blob_put, (json.dumps(blobs), run_id, _blob_put),
                                wake=False, atomic=False)

    async def blob_get(self, *, keys: list[str]) -> dict[str, str]:
        if not keys:
            return {}
        return await self._read(_blob_get, json.dumps(list(keys)))

    async def kv_get(self, *, key: str) -> tuple[str, int] | None:
        # On the caller's thread when the writer is idle, as run_get: a circuit
        # breaker's read (once a second per process under load) queued for the writer
        # thread also sent the loop's next group of writes there.
        done, value = self._call_inline(_kv_get, key)
        if done:
            return value  # type: ignore[no-any-return]
        return await self._read(_kv_get, key)

    async def kv_cas(self, *, key: str, value: str, version: int | None, now: float) -> bool:
        return await self._write(_kv_cas, key, value, version, now)

    async def rate_acquire(self, *, key: str, limit: float, period: float, amount: float,
                           now: float) -> float:
        check_rate(key, limit, period, amount)
        return await self._write(_rate_acquire, key, limit, period, amount, now)

    async def queue_limit_set(self, *, queue: str, limit: int | None, now: float) -> None:
        check_queue_limit(queue, limit)
        # Raising a limit (or removing it) may make runs claimable: wake the workers.
        await self._write_wake(_queue_limit_set, queue, limit, now)

    async def queue_limits(self) -> dict[str, int]:
        return await self._read(_queue_limits)

    async def queue_resume(self, *, queue: str, now: float) -> tuple[bool, int | None]:
        check_queue_limit(queue, None)
        # A resumed queue may make runs claimable: wake the workers.
        return await self._write_wake(_queue_resume, queue, now)

    async def queue_pauses(self) -> dict[str, int | None]:
        return await self._read(_queue_pauses)

    async def run_publish(self, *, run_id: str, data: str) -> None:
        """Store the event (for ``run_events_read``), then send it to every
        subscriber's socket for the run (see ``EventBus``)."""
        payload = check_event(run_id, data)
        await self._write(event_chunk, run_id, data)
        await self._events.publish(run_id, payload)

    async def run_events(self, run_id: str, *,
                         ready: Callable[[], None] | None = None) -> AsyncIterator[str]:
        async for data in self._events.subscribe(run_id, ready=ready):
            yield data


    # -- runs over their whole life (migration 0003; see store/_lifecycle.py) ----------

    async def attempt_record(self, *, attempts: list[AttemptRecord]) -> None:
        # History only: a chunk that fails leaves the others written.
        # Grouped like appends (see _group_append): a run's end waits for its attempts.
        chunks = [self._grouped(_lc.attempt_record, (chunk,), wake=False, atomic=True)
                  for chunk in _lc.attempt_chunks(list(attempts))]
        for outcome in await asyncio.gather(*chunks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def attempt_list(self, run_id: str) -> list[AttemptRecord]:
        return await self._read(_lc.attempt_list, run_id)

    async def run_retry(self, *, run_id: str, version: str | None, now: float) -> RetryReport:
        return await self._write_wake(
            _lc.run_retry, run_id, version, now, _run_get, _journal_read)

    async def run_fork(self, *, source_run_id: str, run: RunRecord, at: int,
                       entries: Sequence[JournalEntry] | None = None) -> RunRecord:
        return await self._write_wake(
            _lc.run_fork, source_run_id, run, at, None if entries is None else list(entries),
            _run_get, _run_insert)

    async def run_continue(self, *, lease: Lease, input: str, now: float) -> None:
        await self._write_wake(_lc.run_continue, lease, input, now)

    async def run_crash_mark(self, *, lease: Lease, crashes: int, progress: int) -> None:
        await self._write(_lc.run_crash_mark, lease, crashes, progress)

    async def journal_archive_read(self, run_id: str) -> list[ArchivedJournal]:
        return await self._read(_lc.journal_archive_read, run_id)

    async def run_versions(self) -> list[tuple[str | None, str, int]]:
        return await self._read(_lc.run_versions)

    async def run_version_candidates(self, *, version: str) -> list[tuple[str, str]]:
        return await self._read(_lc.run_version_candidates, version)

    async def run_version_set(self, *, run_ids: list[str], from_version: str,
                              to_version: str, now: float) -> list[str]:
        return await self._write_wake(
            _lc.run_version_set, list(run_ids), from_version, to_version, now)

    async def schedule_upsert(self, *, schedule: ScheduleRecord) -> None:
        await self._write(_lc.schedule_upsert, schedule)

    async def schedule_list(self) -> list[ScheduleRecord]:
        return await self._read(_lc.schedule_list)

    async def schedule_get(self, name: str) -> ScheduleRecord | None:
        return await self._read(_lc.schedule_get, name)

    async def schedule_pause(self, *, name: str, paused: bool, next_tick: float | None,
                             now: float) -> bool:
        return await self._write(_lc.schedule_pause, name, paused, next_tick, now)

    async def schedule_delete(self, name: str) -> bool:
        return await self._write(_lc.schedule_delete, name)

    async def schedule_advance(self, *, name: str, expected: float | None,
                               next_tick: float | None, last_tick: float | None,
                               last_run_id: str | None, now: float) -> bool:
        return await self._write(
            _lc.schedule_advance, name, expected, next_tick, last_tick, last_run_id, now)

    async def run_purge(self, *, finished_before: float, statuses: list[str],
                        limit: int = 1000, workflows: list[str] | None = None,
                        exclude_workflows: list[str] | None = None) -> PurgeReport:
        if workflows is not None and not workflows:
            return PurgeReport()
        return await self._write(_lc.run_purge, finished_before, list(statuses), limit,
                                 None if workflows is None else list(workflows),
                                 list(exclude_workflows or ()))

    async def run_erase(self, *, run_id: str, now: float) -> PurgeReport:
        return await self._write(_lc.run_erase, run_id, now, _run_get)


# -- operations, run on the writer thread inside a transaction ---------------------------


def _run_insert(conn: apsw.Connection, run: RunRecord) -> tuple[RunRecord, bool]:
    conn.execute(Q["run_insert"], run_params(run))
    if conn.changes() == 1:
        return run, True  # stored as given (tests/store/test_many.py): no read back
    stored = _run_get(conn, run.run_id)
    assert stored is not None
    return stored, False


def _run_get(conn: apsw.Connection, run_id: str) -> RunRecord | None:
    for row in conn.execute(Q["run_get"], {"run_id": run_id}):
        return run_from_row(row)
    return None


_SETTLED = json.dumps(sorted(s.value for s in RunStatus if s.is_settled))


def _run_get_many(conn: apsw.Connection, run_ids: tuple[str, ...],
                  settled_only: bool) -> list[RunRecord]:
    params = {"run_ids": json.dumps(run_ids), "statuses": _SETTLED if settled_only else None}
    return [run_from_row(r) for r in conn.execute(Q["run_get_many"], params)]


def _run_insert_many(conn: apsw.Connection,
                     runs: list[RunRecord]) -> list[tuple[RunRecord, bool]]:
    return [_run_insert(conn, run) for run in runs]


def _run_list(conn: apsw.Connection, status: str | None, limit: int) -> list[RunRecord]:
    if status is None:  # (the per-status merge: no ordered scan of every run)
        return [run_from_row(r) for r in conn.execute(Q["run_list_all"], {"limit": limit})]
    return [run_from_row(r)
            for r in conn.execute(Q["run_list"], {"status": status, "limit": limit})]


def _run_list_unsettled(conn: apsw.Connection, limit: int) -> list[RunRecord]:
    return [run_from_row(r) for r in conn.execute(Q["run_list_unsettled"], {"limit": limit})]


def _journal_read(conn: apsw.Connection, run_id: str) -> list[JournalEntry]:
    return [entry_from_row(r) for r in conn.execute(Q["journal_read"], {"run_id": run_id})]


def _limits_of(conn: apsw.Connection, queues: tuple[str, ...]) -> dict[str, int]:
    """The concurrency limits of those of ``queues`` that have one."""
    return {q: n for q, n in conn.execute(Q["queue_limits_of"],
                                          {"queues": json.dumps(queues)})}


def _filter(workflows: list[str] | None, version: str | None,
            exclude: Collection[str] = ()) -> dict[str, Any]:
    """Which runs a worker may claim: of the workflows it registered (None: any), of
    its code version or of none (a worker without a version: runs without one), and
    none of the ids in ``exclude``."""
    names = None if workflows is None else json.dumps(sorted(workflows))
    return {"version": version, "workflows": names,
            "exclude": json.dumps(list(exclude)) if exclude else None}


_ANY = _filter(None, None)


def _run_claim(conn: apsw.Connection, worker_id: str, queues: tuple[str, ...], limit: int,
               now: float, lease_expires: float,
               flt: dict[str, Any] = _ANY) -> list[ClaimedRun]:
    """Claim under a new lease. A limited queue gives at most its limit less the runs
    held under a lease that has not expired. Atomic across processes: this runs in the
    writer's ``BEGIN IMMEDIATE`` transaction, which holds the file's write lock."""
    limits = _limits_of(conn, queues)
    params = {"takeover_before": None, **flt, "worker_id": worker_id, "now": now,
              "lease_expires": lease_expires}
    if len(queues) == 1 and not limits and limit <= _CLAIM_ONE_STATEMENT_MAX:
        rows = conn.execute(Q["run_claim"], {**params, "queue": queues[0],
                                             "limit": limit}).fetchall()
        # (each row's last column: when the run became due, its available_at before)
        return _claimed(conn, worker_id, [r[:-1] for r in rows], [r[-1] for r in rows])
    candidates: list[Any] = []
    for queue_name in queues:
        room = limit
        if queue_name in limits:
            held: Any = conn.execute(Q["queue_held"], {"queue": queue_name, "now": now}
                                     ).fetchall()[0][0]
            room = min(limits[queue_name] - held, limit)
        if room > 0:
            candidates += conn.execute(Q["run_claim_candidates"], {
                **params, "queue": queue_name, "limit": room}).fetchall()
    candidates.sort(key=lambda c: c[1])
    ids = [run_id for run_id, _ in candidates[:limit]]
    if not ids:
        return []
    rows = conn.execute(Q["run_claim_ids"], {**params, "run_ids": json.dumps(ids)}).fetchall()
    rows.sort(key=lambda r: (r[5], r[0]))
    due = dict(candidates)  # (their available_at before the claim: when they became due)
    return _claimed(conn, worker_id, rows, [due.get(r[0]) for r in rows])


def _claimed(conn: apsw.Connection, worker_id: str, rows: Sequence[Sequence[Any]],
             due: list[Any]) -> list[ClaimedRun]:
    runs = [run_from_row(row) for row in rows]
    journals = _journal_read_many(conn, [run.run_id for run in runs])
    return [ClaimedRun(run=run, lease=Lease(run.run_id, worker_id, run.fencing_token),
                       journal=journals.get(run.run_id, []), due_at=due_at)
            for run, due_at in zip(runs, due, strict=True)]


def _journal_read_many(conn: apsw.Connection,
                       run_ids: list[str]) -> dict[str, list[JournalEntry]]:
    """The journals of ``run_ids`` (those with an entry), in one query: a claim of 100
    new runs spent half its time on 100 queries that each found nothing."""
    if not run_ids:
        return {}
    if len(run_ids) == 1:
        return {run_ids[0]: _journal_read(conn, run_ids[0])}
    journals: dict[str, list[JournalEntry]] = {}
    for row in conn.execute(Q["journal_read_many"], {"run_ids": json.dumps(run_ids)}):
        entries = journals.get(row[0])
        if entries is None:
            entries = journals[row[0]] = []
        entries.append(entry_from_row(row[1:]))
    return journals


def _check_lease(conn: apsw.Connection, lease: Lease) -> None:
    for _ in conn.execute(Q["lease_check"], lease_params(lease)):
        return
    raise LeaseLost(lease.run_id, lease.fencing_token)


def _journal_append(conn: apsw.Connection, lease: Lease, e: JournalEntry) -> None:
    conn.execute(Q["journal_append"], entry_params(lease, e))
    if conn.changes() == 1:
        return
    _check_lease(conn, lease)
    if not _written_before(conn, lease, e):
        raise final_conflict(lease.run_id, e.position)


def _written_before(conn: apsw.Connection, lease: Lease, e: JournalEntry) -> bool:
    """Whether the final entry holding ``e``'s position is ``e``, written under this
    lease (``same_entry``): a retried append whose first attempt committed and whose
    caller was not told (an I/O error after the commit), a success."""
    for row in conn.execute(Q["journal_written"], {
            "run_id": lease.run_id, "position": e.position,
            "fencing_token": lease.fencing_token}):
        return same_entry(entry_from_row(row), e)
    return False


def _journal_append_with(conn: apsw.Connection, lease: Lease, e: JournalEntry,
                         metrics: str | None, now: float, blobs_json: str | None) -> bool:
    """The texts the entry references (``blobs_json``, with the run's references to
    them) and the run's metrics, then the entry, in one transaction (the caller's, or
    its own when called alone): whether the entry was written. Not written means a final
    entry holds its position: the metrics and texts stay written (the transaction
    commits). A stale lease raises LeaseLost (the metrics statement, or the append,
    found no row). Run in a group without a savepoint of its own: each statement writes
    nothing when it fails, and what an earlier one wrote stays as if it had been its
    own write (a call's cost, texts stored under their digest). Alone, a failure rolls
    everything back (``_call_alone``)."""
    if conn.getautocommit():
        conn.execute("BEGIN IMMEDIATE")  # (an error: _call_alone rolls it back)
        written = _journal_append_with(conn, lease, e, metrics, now, blobs_json)
        conn.execute("COMMIT")
        return written
    if blobs_json is not None:
        _lc.blob_put(conn, blobs_json, lease.run_id, _blob_put)
    if metrics is not None:
        _run_metrics_set(conn, lease, metrics, now)  # (a stale lease raises LeaseLost)
    conn.execute(Q["journal_append"], entry_params(lease, e))
    if conn.changes() == 1:
        return True
    if metrics is None:
        _check_lease(conn, lease)
    return _written_before(conn, lease, e)


#: Most journal appends written by one statement. Each statement call lets the busy event
#: loop's thread take the GIL, and the writer waits up to the switch interval (5 ms) to
#: get it back: a batch of 512 appends in one statement instead of eight.
_APPEND_CHUNK = 512

_APPEND_COLUMNS = ("run_id, position, kind, name, status, result, error, attempts, "
                   "started_at, finished_at, next_attempt_at, args, fencing_token")
_APPEND_WIDTH = 13


@functools.lru_cache(maxsize=16)
def _append_many_sql(n: int) -> str:
    """``journal_append`` for up to ``n`` entries in one statement (``n`` a power of two;
    rows whose run id is NULL are padding), all or none: an entry whose lease is not
    current (its run id selected as NULL) or that would overwrite a final entry (its kind
    set to NULL) breaks a NOT NULL constraint, and SQLite undoes the whole statement
    (its triggers' rows too) and leaves the transaction open.

    It returns nothing: with ``RETURNING`` each written key was a step of its own, and
    each step let the event loop's thread take the GIL (``bench/stepcost.py --runs``).
    The ``WHERE`` also tells SQLite's parser that ``ON CONFLICT`` is the upsert's."""
    values = ", ".join(f"v.column{k}" for k in range(2, _APPEND_WIDTH + 1))
    return (
        f"INSERT INTO tether_journal ({_APPEND_COLUMNS}) "
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM tether_runs WHERE run_id = v.column1 "
        "AND fencing_token = v.column13 AND status = 'running') THEN v.column1 END, "
        f"{values} FROM (VALUES {_lc.values_rows(n, _APPEND_WIDTH)}) AS v "
        "WHERE v.column1 IS NOT NULL "
        "ON CONFLICT (run_id, position) DO UPDATE SET "
        "kind = CASE WHEN tether_journal.status = 'pending' THEN excluded.kind END, "
        "name = excluded.name, status = excluded.status, "
        "result = excluded.result, error = excluded.error, attempts = excluded.attempts, "
        "finished_at = excluded.finished_at, next_attempt_at = excluded.next_attempt_at, "
        "fencing_token = excluded.fencing_token, "
        "started_at = coalesce(tether_journal.started_at, excluded.started_at)"
    )


def _append_params(ops: list[Op]) -> list[Any] | None:
    """The parameters of one ``_append_many_sql`` statement for ``ops`` (queued
    ``_journal_append`` operations), padded to its size (``_APPEND_WIDTH`` per row);
    None when two of them write one position (they must apply one after the other)."""
    params: list[Any] = []
    keys: set[tuple[str, int]] = set()
    for op in ops:
        lease, e = op.args
        params += (lease.run_id, e.position, e.kind, e.name, e.status, e.result, e.error,
                   e.attempts, e.started_at, e.finished_at, e.next_attempt_at, e.args,
                   lease.fencing_token)
        keys.add((lease.run_id, e.position))
    if len(keys) != len(ops):
        return None
    _lc.pad(params, _APPEND_WIDTH)
    return params


def _append_all(conn: apsw.Connection, ops: list[Op], *, in_transaction: bool) -> bool:
    """Write ``ops`` (queued ``_journal_append`` operations) in one ``_append_many_sql``
    statement, all or none. False: nothing written (two of one position; an append
    refused, and SQLite undid the statement). In a transaction that SQLite rolled back
    whole, the error propagates (all fail), as does ``apsw.BusyError``."""
    params = _append_params(ops)
    if params is None:
        return False
    try:
        conn.execute(_append_many_sql(len(params) // _APPEND_WIDTH), params)
    except apsw.BusyError:
        raise
    except apsw.Error:
        if in_transaction and conn.getautocommit():
            raise  # SQLite rolled the whole batch back: all fail
        return False
    return True


def _appends_alone(conn: apsw.Connection, ops: list[Op],
                   ) -> list[tuple[Op, Any, BaseException | None]] | None:
    """A batch of nothing but journal appends (at most ``_APPEND_CHUNK``), written by one
    statement that is its own transaction (SQLite commits it, with the same fsync): one
    call into SQLite where ``BEGIN``, the statement and ``COMMIT`` were three, each
    letting the busy event loop's thread take the GIL. None: nothing written (an append
    refused, two of one position); the batch runs in a transaction as usual, where
    each append that fails says why. ``apsw.BusyError`` propagates."""
    if not _append_all(conn, ops, in_transaction=False):
        return None
    return [(op, None, None) for op in ops]


def _appends(conn: apsw.Connection, ops: list[Op],
             foreign: Callable[[Exception], Exception],
             ) -> list[tuple[Op, Any, BaseException | None]]:
    """Several queued journal appends (``_journal_append`` operations) in one statement
    of the open transaction: one call into SQLite instead of one per entry (each call
    lets the event loop's thread take the GIL, and the writer waits to get it back).
    The statement writes all of them or none (``_append_many_sql``); when it writes
    none (a lost lease, a final entry already there), each append runs alone again and
    raises its own error. Two appends of one position in a chunk also run one by one,
    in order."""
    if _append_all(conn, ops, in_transaction=True):
        return [(op, None, None) for op in ops]
    out: list[tuple[Op, Any, BaseException | None]] = []
    for op in ops:
        try:
            out.append((op, op.fn(conn, *op.args), None))
        except apsw.BusyError:
            raise
        except Exception as exc:
            if isinstance(exc, apsw.Error) and conn.getautocommit():
                raise
            out.append((op, None, foreign(exc)))
    return out


def _in_savepoint(conn: apsw.Connection, op: Op, foreign: Callable[[Exception], Exception],
                  ) -> tuple[Op, Any, BaseException | None]:
    """Run a writing operation of a batch in a savepoint of its own: its outcome, and
    nothing of it left written when it failed. ``apsw.BusyError`` propagates."""
    conn.execute("SAVEPOINT op")
    try:
        value = op.fn(conn, *op.args)
    except apsw.BusyError:
        raise
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return op, None, foreign(exc)
    conn.execute("RELEASE op")
    return op, value, None


_FINISH_WIDTH = 6


@functools.lru_cache(maxsize=32)
def _finish_many_sql(n: int, blocked: bool = False) -> str:
    """End up to ``n`` runs under their callers' leases in one statement (``n`` a power of
    two; rows with a NULL run id are padding): (run id, fencing token, status, result,
    error, now) each. With ``blocked`` (some end is ``blocked``), a run ended ``blocked``
    whose cancel is pending ends ``cancelled`` (the block's reason its error): a cancel
    committed after its worker last heard of cancels has no code left that could see it
    (as ``run_cancel_blocked``). Without, the statement is the one every other batch of
    ends has always had (the hot path). The index is named: each row of the list looks
    its run up by key, whatever the statistics say about running runs (so does
    ``_wake_many_sql``)."""
    status = ("CASE WHEN v.column3 = 'blocked' AND tether_runs.cancel_requested "
              "THEN 'cancelled' ELSE v.column3 END" if blocked else "v.column3")
    return (
        "UPDATE tether_runs INDEXED BY sqlite_autoindex_tether_runs_1 "
        f"SET status = {status}, result = v.column4, "
        "error = v.column5, finished_at = v.column6, updated_at = v.column6, "
        "owner = NULL, available_at = NULL, waiting_for = NULL, wait_signal = NULL, "
        f"wait_child = NULL FROM (VALUES {_lc.values_rows(n, _FINISH_WIDTH)}) AS v "
        "WHERE tether_runs.run_id = v.column1 AND tether_runs.fencing_token = v.column2 "
        "AND tether_runs.status = 'running'"
    )


@functools.lru_cache(maxsize=16)
def _wake_many_sql(n: int) -> str:
    """``run_wake_waiters`` for up to ``n`` runs that ended: (run id, now) each."""
    return (
        "UPDATE tether_runs INDEXED BY tether_runs_wait_child "
        "SET available_at = v.column2, updated_at = v.column2 "
        f"FROM (VALUES {_lc.values_rows(n, 2)}) AS v "
        "WHERE tether_runs.wait_child = v.column1 AND tether_runs.status = 'waiting'"
    )


@functools.lru_cache(maxsize=16)
def _wake_listed_many_sql(n: int) -> str:
    """``run_wake_listed`` for up to ``n`` runs that ended (the rows of
    ``_wake_many_sql``): each one's parent, by key, if it waits for it among several."""
    return (
        "UPDATE tether_runs INDEXED BY sqlite_autoindex_tether_runs_1 "
        "SET available_at = v.column2, updated_at = v.column2 "
        f"FROM (VALUES {_lc.values_rows(n, 2)}) AS v "
        "JOIN tether_runs AS c INDEXED BY sqlite_autoindex_tether_runs_1 "
        "ON c.run_id = v.column1 "
        "WHERE tether_runs.run_id = c.parent_run_id AND tether_runs.status = 'waiting' "
        "AND instr(tether_runs.wait_child, char(31) || v.column1 || char(31)) > 0"
    )


def _end_runs(conn: apsw.Connection, ends: list[tuple[Any, ...]]) -> list[str] | None:
    """End runs, each ``(lease, status, result, error, now)`` (``run_finish``), and make
    the runs waiting for them as children claimable (alone, or among several: their
    parents, ``run_wake_listed``); three statements for all of them. Returns the status
    each run ended with, in order: the one asked, but ``cancelled`` for a run ended
    ``blocked`` whose cancel was pending, its children cancelled here too.
    None: a lease was not current (or a run came twice), and what was written must be
    undone by the caller."""
    params: list[Any] = []
    wake: list[Any] = []
    statuses: list[str] = []
    for lease, status, result, error, now in ends:
        params += (lease.run_id, lease.fencing_token, status, result, error, now)
        wake += (lease.run_id, now)
        statuses.append(status)
    blocked = "blocked" in statuses  # (rare: only then the CASE, and a read after)
    conn.execute(_finish_many_sql(_lc.pad(params, _FINISH_WIDTH), blocked), params)
    if conn.changes() != len(ends):
        return None
    padded = _lc.pad(wake, 2)
    conn.execute(_wake_many_sql(padded), wake)
    conn.execute(_wake_listed_many_sql(padded), wake)
    if blocked:
        statuses = [_cancelled_if_asked(conn, lease.run_id, status, now)
                    for lease, status, _, _, now in ends]
    return statuses


def _cancelled_if_asked(conn: apsw.Connection, run_id: str, status: str, now: float) -> str:
    """The status a run just ended ``status`` has: ``cancelled`` instead of ``blocked``
    when a cancel was pending (``_finish_many_sql``), and then its children are
    cancelled, as the worker that ends a run cancelled does (the worker did not know)."""
    if status != "blocked":
        return status
    row = conn.execute(Q["run_status"], {"run_id": run_id}).fetchone()
    if row is None or row[0] != "cancelled":
        return status
    _run_children_cancel(conn, run_id, now)
    return "cancelled"


def _run_finish(conn: apsw.Connection, lease: Lease, status: str, result: str | None,
                error: str | None, now: float) -> str:
    ended = _end_runs(conn, [(lease, status, result, error, now)])
    if ended is None:
        raise LeaseLost(lease.run_id, lease.fencing_token)  # (nothing was written)
    return ended[0]


#: The most values one of the writer's statements binds: 512 journal appends.
_MOST_PARAMETERS = max(_APPEND_CHUNK * _APPEND_WIDTH, _APPEND_CHUNK * _FINISH_WIDTH,
                       _lc.ATTEMPT_CHUNK * _lc.ATTEMPT_WIDTH)


def _check_parameter_limit(conn: apsw.Connection, path: str) -> None:
    """Refuse an SQLite that binds fewer values per statement than the writer's batches
    need (before 3.32, SQLite allowed 999 by default): every batch would fail.

    Raises: ConfigError."""
    limit = conn.limit(apsw.SQLITE_LIMIT_VARIABLE_NUMBER)
    if limit < _MOST_PARAMETERS:
        raise ConfigError(
            f"SQLite store {path!r}: this SQLite ({apsw.sqlite_lib_version()}) binds at "
            f"most {limit} values per statement and Tether's batched writes need "
            f"{_MOST_PARAMETERS}; use an apsw built with SQLite 3.32 or later (the apsw "
            "wheels on PyPI bundle one)")


def _finishes(conn: apsw.Connection, ops: list[Op],
              foreign: Callable[[Exception], Exception],
              ) -> list[tuple[Op, Any, BaseException | None]]:
    """Several queued runs' ends (``_run_finish`` operations) in two statements, in a
    savepoint: each call into SQLite lets the busy event loop's thread take the GIL
    (four calls per end before: a savepoint, the end, the wake-up, the release). When a
    lease is not current the savepoint is undone and each end runs alone again, in
    order, and raises its own error."""
    conn.execute("SAVEPOINT ends")
    try:
        ended = _end_runs(conn, [op.args for op in ops])
    except apsw.BusyError:
        raise
    except apsw.Error:
        if conn.getautocommit():
            raise  # SQLite rolled the whole batch back: all fail
        ended = None
    if ended is not None:
        conn.execute("RELEASE ends")
        return [(op, status, None) for op, status in zip(ops, ended, strict=True)]
    conn.execute("ROLLBACK TO ends")
    conn.execute("RELEASE ends")
    return [_in_savepoint(conn, op, foreign) for op in ops]


def _chunk_writer(fn: Callable[..., Any],
                  ) -> Callable[..., list[tuple[Op, Any, BaseException | None]]] | None:
    """What writes a chunk of consecutive operations of ``fn`` in a batch at once."""
    if fn is _journal_append:
        return _appends
    if fn is _run_finish:
        return _finishes
    return None


def _wake_waiters(conn: apsw.Connection, run_id: str, now: float) -> None:
    """``run_id`` ended: the runs waiting for it (alone or among several) are claimable."""
    params = {"now": now, "run_id": run_id}
    conn.execute(Q["run_wake_waiters"], params)
    conn.execute(Q["run_wake_listed"], params)


def _listed_happened(conn: apsw.Connection, run_id: str, wait: Wait) -> bool:
    """Whether a wait for several signals or children (the list form of ``wait_names``,
    which ``run_release`` does not match) has one of them already: a pending signal of
    one of its names, or one of its children ended. (Read in the release's transaction:
    a signal or an end committed after it finds the run waiting.)"""
    for name in wait_list(wait.signal) if is_wait_list(wait.signal) else ():
        if conn.execute(Q["signal_oldest"], {"run_id": run_id, "name": name}).fetchall():
            return True
    for child_id in wait_list(wait.child) if is_wait_list(wait.child) else ():
        child = _run_get(conn, child_id)
        if child is not None and child.status.is_ended:
            return True
    return False


def _run_release(conn: apsw.Connection, lease: Lease, wait: Wait, now: float) -> bool:
    """Release the run; True if its queue has a concurrency limit (workers waiting for
    a place should hear of it)."""
    available_at = wait.available_at
    if wait.listed and _listed_happened(conn, lease.run_id, wait):
        available_at = now
    conn.execute(Q["run_release"], {
        **lease_params(lease), "available_at": available_at,
        "waiting_for": wait.description, "now": now, "wait_signal": wait.signal,
        "wait_child": wait.child,
    })
    if conn.changes() != 1:
        raise LeaseLost(lease.run_id, lease.fencing_token)
    return bool(conn.execute(Q["run_queue_limited"], {"run_id": lease.run_id}).fetchall())


def _run_resume(conn: apsw.Connection, run_id: str, now: float) -> RunRecord:
    run = _run_get(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    if run.status != "blocked":
        raise not_resumable(run_id, str(run.status), erased=run.erased_at is not None)
    refuse_erased(run_id, run.erased_at, "resume it")
    conn.execute(Q["run_resume"], {"run_id": run_id, "now": now})
    resumed = _run_get(conn, run_id)
    assert resumed is not None  # read above, in this transaction
    return resumed


def _run_set_status_info(conn: apsw.Connection, lease: Lease, info: str | None,
                         now: float) -> None:
    conn.execute(Q["run_set_status_info"], {**lease_params(lease), "info": info, "now": now})
    if conn.changes() != 1:
        raise LeaseLost(lease.run_id, lease.fencing_token)


def _signal_send(conn: apsw.Connection, run_id: str, name: str, payload: str | None,
                 key: str | None, now: float) -> SignalSent:
    run = _run_get(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    by_key = {"run_id": run_id, "idempotency_key": key}
    if run.status.is_ended:
        # A retried send of a signal the run already got is not an error.
        known: list[Any] = (conn.execute(Q["signal_find_key"], by_key).fetchall()
                            if key else [])
        if known:
            return SignalSent(signal_id=int(known[0][0]), created=False,
                              name=known[0][1], payload=known[0][2])
        raise SignalError(f"run {run_id!r} has ended ({run.status}); signal {name!r} not sent")
    conn.execute(Q["signal_insert"], {**by_key, "name": name, "payload": payload, "now": now})
    if conn.changes() == 1:
        sent = SignalSent(signal_id=conn.last_insert_rowid(), created=True)
    else:
        row: Any = conn.execute(Q["signal_find_key"], by_key).fetchall()[0]
        sent = SignalSent(signal_id=int(row[0]), created=False, name=row[1], payload=row[2])
    conn.execute(Q["signal_wake"], {"run_id": run_id, "name": name, "now": now})
    return sent


def _signal_find(conn: apsw.Connection, run_id: str, key: str) -> SignalSent | None:
    rows: list[Any] = conn.execute(Q["signal_find_key"], {
        "run_id": run_id, "idempotency_key": key}).fetchall()
    if not rows:
        return None
    return SignalSent(signal_id=int(rows[0][0]), created=False, name=rows[0][1],
                      payload=rows[0][2])


def _signal_pending(conn: apsw.Connection, run_id: str, name: str) -> bool:
    rows = conn.execute(Q["signal_pending"], {"run_id": run_id, "name": name}).fetchall()
    return bool(rows[0][0])


def _signal_take(conn: apsw.Connection, lease: Lease, name: str, position: int,
                 deadline: float | None, now: float, timeout_error: str,
                 sent_by: float | None = None,
                 clock_now: float | None = None) -> JournalEntry | None:
    _check_lease(conn, lease)
    params = {"run_id": lease.run_id, "name": name}
    late = deadline is not None and (now if clock_now is None else clock_now) >= deadline
    # (Past the deadline, only a signal sent by then answers the wait: one sent after
    # it came after the timeout, and waits for a later wait.)
    by = deadline if sent_by is None else sent_by
    rows: list[Any] = (conn.execute(Q["signal_oldest_sent_by"],
                                    {**params, "sent_by": by}).fetchall()
                       if late else conn.execute(Q["signal_oldest"], params).fetchall())
    if rows:
        signal_id, payload = int(rows[0][0]), rows[0][1]
        conn.execute(Q["signal_consume"], {"position": position, "signal_id": signal_id})
        entry = JournalEntry(position, OperationKind.SIGNAL, name, EntryStatus.OK,
                             result=payload, attempts=1, finished_at=now)
    elif late:
        entry = JournalEntry(position, OperationKind.SIGNAL, name, EntryStatus.ERROR,
                             error=timeout_error,
                             attempts=1, finished_at=now, next_attempt_at=deadline)
    else:
        return None
    _journal_append(conn, lease, entry)
    return entry


def _child_start(conn: apsw.Connection, lease: Lease, child: RunRecord,
                 entry: JournalEntry) -> RunRecord:
    _check_lease(conn, lease)
    stored, created = _run_insert(conn, child)
    if not created and stored.parent_run_id != lease.run_id:
        raise child_id_taken(child.run_id, lease.run_id, stored.workflow)
    _journal_append(conn, lease, entry)
    return stored


def _run_children_cancel(conn: apsw.Connection, parent_run_id: str, now: float) -> list[str]:
    """Cancel a cancelled run's children whose policy is cancel, and the children of
    those that end at once (no worker ends them, so none cancels their children)."""
    params = {"parent_run_id": parent_run_id, "now": now}
    ended = [str(r[0]) for r in conn.execute(Q["run_children_end"], params).fetchall()]
    for child_id in ended:  # it has ended, like a finish: wake a run waiting for it
        _wake_waiters(conn, child_id, now)
    asked = [str(r[0]) for r in conn.execute(Q["run_children_cancel"], params).fetchall()]
    below = [r for child_id in ended for r in _run_children_cancel(conn, child_id, now)]
    return sorted(ended + asked + below)


def _run_cancel(conn: apsw.Connection, run_id: str, now: float,
                reason: str | None) -> RunRecord:
    params = {"run_id": run_id, "now": now, "reason": reason}
    conn.execute(Q["run_cancel_blocked"], params)
    if conn.changes():  # a cancelled blocked run has ended: wake a parent waiting for it
        _wake_waiters(conn, run_id, now)
        # ... and cancel its children, as a worker does when it ends a run cancelled
        _run_children_cancel(conn, run_id, now)
    conn.execute(Q["run_cancel"], params)
    run = _run_get(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def _lease_heartbeat(conn: apsw.Connection, worker_id: str, now: float,
                     lease_expires: float) -> HeartbeatResult:
    result = HeartbeatResult()
    for run_id, cancel in conn.execute(Q["lease_heartbeat"], {
            "lease_expires": lease_expires, "worker_id": worker_id}):
        result.owned.add(run_id)
        if cancel:
            result.cancel_requested.add(run_id)
    conn.execute(Q["worker_touch"], {"now": now, "worker_id": worker_id})
    return result


def _lease_expire_owner(conn: apsw.Connection, worker_id: str, now: float) -> list[str]:
    run_ids = sorted(r for (r,) in conn.execute(
        Q["lease_expire_owner"], {"now": now, "worker_id": worker_id}))
    conn.execute(Q["worker_delete"], {"worker_id": worker_id})
    return run_ids


def _worker_register(conn: apsw.Connection, info: WorkerInfo) -> None:
    conn.execute(Q["worker_register"], {
        "worker_id": info.worker_id, "hostname": info.hostname, "pid": info.pid,
        "pid_start": info.pid_start, "queues": info.queues, "started_at": info.started_at,
        "heartbeat_at": info.heartbeat_at,
    })


def _worker_unregister(conn: apsw.Connection, worker_id: str, now: float) -> None:
    params = {"now": now, "worker_id": worker_id}
    conn.execute(Q["worker_release_runs"], params)
    conn.execute(Q["worker_delete"], params)


def _worker_list(conn: apsw.Connection) -> list[WorkerInfo]:
    return [WorkerInfo(*row) for row in conn.execute(Q["worker_list"])]


def _worker_runs_held(conn: apsw.Connection) -> dict[str, int]:
    return {owner: int(n) for owner, n in conn.execute(Q["worker_runs_held"])}


def _workflow_register(conn: apsw.Connection, workflows: dict[str, str], now: float) -> None:
    for name, queue_name in workflows.items():
        conn.execute(Q["workflow_register"], {"name": name, "queue": queue_name, "now": now})


def _workflow_list(conn: apsw.Connection) -> dict[str, str]:
    return {name: q for name, q in conn.execute(Q["workflow_list"])}


def _next_available_at(conn: apsw.Connection, queues: tuple[str, ...],
                       flt: dict[str, Any] = _ANY) -> float | None:
    """The earliest claimable time; for a queue at its limit, the earliest lease expiry
    of its running runs (a run's end wakes workers sooner), so that workers do not spin
    on runs they may not claim."""
    limits = _limits_of(conn, queues)
    times: list[float] = []
    for queue_name in queues:
        if queue_name in limits:
            row: Any = conn.execute(Q["queue_running"], {"queue": queue_name}).fetchall()[0]
            running, expiry = row
            if running >= limits[queue_name]:
                if expiry is not None:
                    times.append(expiry)
                continue
        times += [v for (v,) in conn.execute(Q["queue_next_available"],
                                             {**flt, "queue": queue_name}) if v is not None]
    return min(times) if times else None


def _run_activity(conn: apsw.Connection, queues: tuple[str, ...],
                  now: float) -> tuple[bool, float | None]:
    """``Store.run_activity``: index lookups, in one read snapshot (the writer's thread)."""
    rows: Any = conn.execute(Q["run_any_running"]).fetchall()
    busy = bool(rows[0][0])
    wake: float | None = None
    for queue_name in queues:
        params = {"queue": queue_name, "now": now}
        if not busy:
            rows = conn.execute(Q["queue_due"], params).fetchall()
            busy = bool(rows[0][0])
        for (at,) in conn.execute(Q["queue_next_wake"], params):
            wake = float(at) if wake is None else min(wake, float(at))
    return busy, wake


def _run_metrics_set(conn: apsw.Connection, lease: Lease, metrics: str, now: float) -> None:
    conn.execute(Q["run_metrics_set"], {**lease_params(lease), "metrics": metrics, "now": now})
    if conn.changes() != 1:
        raise LeaseLost(lease.run_id, lease.fencing_token)


def _blob_put(conn: apsw.Connection, blobs_json: str) -> None:
    conn.execute(Q["blob_put"], {"blobs": blobs_json})


def _blob_get(conn: apsw.Connection, keys_json: str) -> dict[str, str]:
    return {k: v for k, v in conn.execute(Q["blob_get"], {"keys": keys_json})}


def _kv_get(conn: apsw.Connection, key: str) -> tuple[str, int] | None:
    for value, version in conn.execute(Q["kv_get"], {"key": key}):
        return str(value), int(version)
    return None


def _kv_cas(conn: apsw.Connection, key: str, value: str, version: int | None,
            now: float) -> bool:
    params = {"key": key, "value": value, "now": now}
    if version is None:
        conn.execute(Q["kv_insert"], params)
    else:
        conn.execute(Q["kv_update"], {**params, "version": version})
    return conn.changes() == 1


def _rate_acquire(conn: apsw.Connection, key: str, limit: float, period: float,
                  amount: float, now: float) -> float:
    rows: list[Any] = conn.execute(Q["rate_get"], {"key": key}).fetchall()
    tokens, updated_at = rows[0] if rows else (None, None)
    wait, left, last = bucket_take(tokens, updated_at, limit=limit, period=period,
                                   amount=amount, now=now)
    if wait == 0.0:
        conn.execute(Q["rate_put"], {"key": key, "tokens": left, "updated_at": last})
    return wait


def _queue_limit_set(conn: apsw.Connection, queue_name: str, limit: int | None,
                     now: float) -> None:
    if limit is None:
        conn.execute(Q["queue_limit_delete"], {"queue": queue_name})
    else:
        conn.execute(Q["queue_limit_set"], {"queue": queue_name, "max_running": limit,
                                            "now": now})


def _queue_limits(conn: apsw.Connection) -> dict[str, int]:
    return {q: int(n) for q, n in conn.execute(Q["queue_limits"])}


def _queue_resume(conn: apsw.Connection, queue_name: str,
                  now: float) -> tuple[bool, int | None]:
    rows = conn.execute(Q["queue_paused"], {"queue": queue_name}).fetchall()
    if not rows:
        return False, None
    before = rows[0][0]
    if before is None:
        conn.execute(Q["queue_limit_delete"], {"queue": queue_name})
        return True, None
    conn.execute(Q["queue_resume"], {"queue": queue_name, "now": now})
    return True, int(before)


def _queue_pauses(conn: apsw.Connection) -> dict[str, int | None]:
    return {q: None if n is None else int(n) for q, n in conn.execute(Q["queue_pauses"])}


if TYPE_CHECKING:

    def _conforms(s: SqliteStore) -> Store:
        return s
