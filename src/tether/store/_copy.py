"""Copying a store into another store, of either kind (``tether db copy``): SQLite to
PostgreSQL, PostgreSQL to SQLite, or to another store of the same kind, with every run
in it, so that workers pointed at the target go on where those of the source stopped.

The source is only read, in one read transaction (one snapshot); the target is written
in one write transaction, after a check that it holds nothing, so a copy interrupted
anywhere (an error, a kill) leaves it as empty as it was, and a second copy can begin
again. The copy is table by table and row by row (not through the Store port, which
has no way to write a run in every state it can be in, and not through a dump file,
which neither backend can read from the other): ``COPIED`` names the tables copied as
they are, ``NOT_COPIED`` the others and why. See docs/design-db-copy.md."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tether import _faults
from tether.errors import ConfigError, StoreError
from tether.store._port import WorkerInfo
from tether.store._restore import RestoreRefused
from tether.store._sql import load_migrations

#: The tables copied, by their name without the backend's prefix (SQLite's
#: ``tether_``, PostgreSQL's schema), in the order they are written, with what they hold.
COPIED: dict[str, str] = {
    "runs": "runs in every status, with their leases' fencing tokens, crash counters, "
            "versions, budgets' metrics",
    "journal": "each run's journal",
    "journal_archive": "the journals of the generations before a continue-as-new",
    "signals": "signals, pending and taken (ids kept; the target's counter set past them)",
    "attempts": "the attempt history (SQLite's first attempts known from tether_leases "
                "alone are written out as rows for PostgreSQL)",
    "run_events": "the live event log tether serve streams (ids kept where the target "
                  "reads them the same way; the target's counter set past them)",
    "blobs": "content-addressed texts (message texts stored once)",
    "blob_refs": "which runs reference which texts",
    "schedules": "schedules: paused, next tick, last tick and run",
    "queue_limits": "queue limits and paused queues",
    "workflows": "the workflow names workers registered",
    "kv": "compare-and-set values (a provider's circuit breaker)",
    "rate_buckets": "token buckets",
    "metric_totals": "what purges took out of /metrics' cumulative figures",
}
#: The tables of either schema that are not copied, and why.
NOT_COPIED: dict[str, str] = {
    "workers": "the live worker registry: no worker of the source is attached to the "
               "target (its workers are stopped; those started on the target register)",
    "schema_version": "the target's own, written by its migrations",
    "schema_compatible": "the target's own (SQLite), written by its migrations",
    "leases": "SQLite's record of who held a lease that journaled a first attempt: "
              "copied SQLite to SQLite, written out as attempts for PostgreSQL",
    "sqlite_sequence": "SQLite's counters, set by the rows inserted",
}
#: What the copy tells the store it reads from or writes to (``pg_stat_activity``).
APP_NAME = "tether-copy"
#: How long the target's transaction waits for a lock on a table of the target (a
#: session that holds one is using it) before it gives up, changing nothing.
LOCK_TIMEOUT = "10s"
#: Rows fetched at a time from a PostgreSQL source.
_BATCH = 5000


class CopyRefused(RestoreRefused):
    """A copy that was not done, neither store changed: the source is in use, not a
    Tether store, or of another schema version than this code's; the target is in use,
    holds something, or is the source. ``tether db copy`` exits 2 on it."""


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What ``copy_store`` did."""

    #: Where each store is (a file's path, or a schema at a server; no password).
    source: str
    target: str
    #: Rows copied per table (``COPIED``'s names).
    counts: dict[str, int]
    #: Runs copied, and how many of them wait (for a signal, a timer, an approval, a
    #: child).
    runs: int
    waiting: int
    #: The schema version both stores are at.
    schema_version: int
    #: Migrations applied to the target before the copy (a new store).
    created: list[str] = field(default_factory=list)
    #: Seconds the copy took, checks included.
    seconds: float = 0.0


def _table(kind: str, schema: str, name: str) -> str:
    return f"tether_{name}" if kind == "sqlite" else f"{schema}.{name}"


class _Side:
    """One store of the copy, read or written with a connection of its own (apsw or
    psycopg's blocking one: the copy runs in a thread)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.kind = "sqlite" if isinstance(getattr(store, "path", None), str) else "postgres"
        self.schema = "" if self.kind == "sqlite" else str(store.schema)
        self.conn: Any = None
        #: The server's last "permission denied" (SQLSTATE 42501) to this side's own
        #: statements (``errors``), to tell it from the other side's.
        self.denied: BaseException | None = None

    @property
    def where(self) -> str:
        if self.kind == "sqlite":
            return os.path.abspath(str(self.store.path))
        return f"schema {self.schema} at {self.store.cfg.where}"

    def t(self, name: str) -> str:
        return _table(self.kind, self.schema, name)

    def known(self) -> dict[int, str]:
        package = f"tether.store.{self.kind}"
        return {v: name for v, name, _ in load_migrations(package)}

    # -- connections -------------------------------------------------------------------

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Tether's errors for the backend's."""
        if self.kind == "sqlite":
            import apsw

            from tether.store.sqlite._store import translate_error

            try:
                yield
            except apsw.Error as exc:
                raise translate_error(exc, self.store.path) from exc
        else:
            import psycopg

            from tether.store.postgres._config import translate_errors

            with translate_errors(self.store.cfg):
                try:
                    yield
                except psycopg.errors.InsufficientPrivilege as exc:
                    self.denied = exc
                    raise

    @contextlib.contextmanager
    def own(self) -> Iterator[None]:
        """Around operations of this side's store (its errors translated already): its
        "permission denied" is noted (``denied``) as this side's."""
        try:
            yield
        except StoreError as exc:
            if exc.sqlstate == "42501":
                self.denied = exc.__cause__
            raise

    def connect(self) -> None:
        with self.errors():
            if self.kind == "sqlite":
                self.conn = self.store._open_file()
            else:
                import psycopg

                self.conn = psycopg.connect(self.store.cfg.conninfo, autocommit=True,
                                            application_name=APP_NAME)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def tables(self) -> set[str]:
        """Tether's tables in the store (without the prefix)."""
        if self.kind == "sqlite":
            return {r[0].removeprefix("tether_") for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {r[0] for r in self.conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')", (self.schema,))}

    def columns(self, name: str) -> list[str]:
        if self.kind == "sqlite":
            return [r[1] for r in self.conn.execute(f"PRAGMA table_info({self.t(name)})")]
        return [r[0] for r in self.conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum", (self.t(name),))]

    def versions(self, tables: set[str]) -> tuple[set[int], set[int]]:
        """The migrations applied: those a version must know, and compatible ones."""
        required: set[int] = set()
        compatible: set[int] = set()
        if "schema_version" in tables:
            required = {int(r[0]) for r in self.conn.execute(
                f"SELECT version FROM {self.t('schema_version')}")}
        if "schema_compatible" in tables:
            compatible = {int(r[0]) for r in self.conn.execute(
                f"SELECT version FROM {self.t('schema_compatible')}")}
        return required, compatible

    def rows(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The rows of ``sql``, as they are read (PostgreSQL: a server-side cursor, in
        the transaction begun)."""
        if self.kind == "sqlite":
            yield from self.conn.execute(sql)
            return
        with self.conn.cursor(name=f"tether_copy_{next(_cursors)}") as cur:
            cur.itersize = _BATCH
            cur.execute(sql)
            yield from cur

    def one(self, sql: str) -> Any:
        """The first value of the first row of ``sql``, or None."""
        row = self.conn.execute(sql).fetchone()
        return row[0] if row else None


_cursors = itertools.count()


# -- checks ----------------------------------------------------------------------------


def _refuse_versions(side: _Side, what: str, tables: set[str], *, source: bool) -> int:
    """The store's schema version, if this code can copy it: it knows every migration
    applied to it and, for the source, none is pending.

    Raises: CopyRefused."""
    if "schema_version" not in tables or "runs" not in tables:
        if source:
            raise CopyRefused(f"{what} is not a Tether store: nothing to copy (check "
                              "--db)")
        return 0
    required, compatible = side.versions(tables)
    known = side.known()
    unknown = required - set(known)
    if unknown:
        raise CopyRefused(
            f"{what} has schema version {max(unknown):04d}, newer than this Tether knows "
            f"(up to {max(known):04d}): copy it with the Tether version that wrote it, or "
            "upgrade tether")
    pending = [f"{v:04d}_{n}" for v, n in known.items() if v not in required | compatible]
    if pending and source:
        raise CopyRefused(
            f"{what} is behind (pending: {', '.join(pending)}): run `tether db migrate "
            "--db URL` with its URL first (its workers stopped, as for the copy), then "
            "copy it")
    return max(required | compatible, default=0)


def _sqlite_workers(side: _Side) -> list[WorkerInfo]:
    """The workers a SQLite store's registry lists (none for a new file), read on a
    connection of its own (the copy's reader may be in its snapshot)."""
    if not os.path.exists(side.store.path) or os.path.getsize(side.store.path) == 0:
        return []
    with side.errors():
        conn = side.store._open_file()
        try:
            conn.execute("PRAGMA query_only=ON")
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "tether_workers" not in tables:
                return []
            return [WorkerInfo(*r) for r in conn.execute(
                "SELECT worker_id, hostname, pid, pid_start, queues, started_at, "
                "heartbeat_at FROM tether_workers ORDER BY started_at")]
        finally:
            conn.close()


async def _refuse_live(side: _Side, role: str, reader: int | None = None) -> None:
    """Refuse if a worker or another Tether process uses the store, as ``tether db
    restore`` does, in its words. ``reader``: the backend pid of the copy's own session
    on a PostgreSQL source (left out).

    Raises: CopyRefused."""
    try:
        if side.kind == "sqlite":
            from tether.store.sqlite._restore import _refuse_live as sqlite_live

            workers = await asyncio.to_thread(_sqlite_workers, side)
            await asyncio.to_thread(sqlite_live, side.where, workers, "the copy")
        else:
            from tether.store.postgres._restore import _target

            await _target(side.store, True, reader, again="the copy")
    except RestoreRefused as exc:
        raise CopyRefused(f"the {role}: {exc}") from None


# -- the rows ---------------------------------------------------------------------------


def _source_sql(src: _Side, dst: _Side, name: str, cols: list[str]) -> str:
    """The statement that reads table ``name`` of the source, as the target takes it."""
    listed = ", ".join(cols)
    if name == "run_events":
        return _events_sql(src, dst)
    if name == "attempts" and src.kind == "sqlite" and dst.kind == "postgres":
        # The first attempts SQLite keeps in the journal and tether_leases alone
        # (lifecycle.sql, attempt_list), written out as PostgreSQL keeps them.
        return (
            f"SELECT {listed} FROM tether_attempts UNION ALL "
            "SELECT j.run_id || '@' || j.generation || '.' || j.position, j.run_id, "
            "j.generation, j.position, j.name, 1, l.worker_id, 'ok', j.started_at, "
            "j.finished_at, NULL "
            "FROM (SELECT c.run_id, r.generation, c.position, c.name, c.started_at, "
            "c.finished_at, c.fencing_token FROM tether_journal c JOIN tether_runs r "
            "ON r.run_id = c.run_id WHERE c.kind = 'step' AND c.status = 'ok' "
            "AND c.attempts = 1 AND c.started_at IS NOT NULL "
            "UNION ALL SELECT run_id, generation, position, name, started_at, finished_at, "
            "fencing_token FROM tether_journal_archive WHERE kind = 'step' "
            "AND status = 'ok' AND attempts = 1 AND started_at IS NOT NULL) j "
            "JOIN tether_leases l ON l.run_id = j.run_id "
            "AND l.fencing_token = j.fencing_token "
            "WHERE NOT EXISTS (SELECT 1 FROM tether_attempts a WHERE a.run_id = j.run_id "
            "AND a.generation = j.generation AND a.position = j.position "
            "AND a.started_at = j.started_at)")
    return f"SELECT {listed} FROM {src.t(name)}"


def _events_sql(src: _Side, dst: _Side) -> str:
    """The statement that reads the run events as the target keeps them: ``(run_id,
    event_id, kind, data)``, and ``txid`` for PostgreSQL. Ids are kept (a client's
    Last-Event-ID goes on), but for a PostgreSQL run with events from before its
    migration 0013 (ids ``<txid>-<event_id>``), copied to SQLite: its events are
    numbered again as SQLite numbers them (after its creation time in microseconds), in
    the order they are read. An op event's values (kind ``o``, migrations 0011 and
    0007) are converted: a JSON array on SQLite (``_ops_to_sqlite``), words on
    PostgreSQL."""
    if src.kind == "sqlite":
        if dst.kind == "sqlite":
            return "SELECT run_id, event_id, kind, data FROM tether_run_events"
        words = " || ' ' || ".join(f"(data ->> {i})" for i in range(5))
        return (f"SELECT run_id, event_id, kind, CASE WHEN kind = 'o' THEN {words} "
                "ELSE data END, NULL FROM tether_run_events")
    events = src.t("run_events")
    if dst.kind == "postgres":
        return f"SELECT run_id, event_id, kind, data, txid::text FROM {events}"
    # (an op event's words are made a JSON array by _ops_to_sqlite: a regular
    # expression per row on the server took longer than the whole copy of the row)
    if not src.one(f"SELECT 1 FROM {events} WHERE txid IS NOT NULL LIMIT 1"):
        return f"SELECT run_id, event_id, kind, data FROM {events}"
    return (
        "SELECT run_id, CASE WHEN old THEN floor(coalesce(created_at, 0) * 1000000)::bigint "
        "+ row_number() OVER (PARTITION BY run_id ORDER BY txid NULLS LAST, event_id) "
        "ELSE event_id END, kind, data FROM (SELECT e.*, r.created_at, "
        "bool_or(e.txid IS NOT NULL) OVER (PARTITION BY e.run_id) AS old "
        f"FROM {events} e LEFT JOIN {src.t('runs')} r ON r.run_id = e.run_id) x")


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _ops_to_sqlite(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """PostgreSQL's run events, an op event's values (kind ``o``: ``position attempts
    status kind name``, migration 0007) made the JSON array SQLite keeps (its 0011)."""
    for row in rows:
        if row[2] == "o" and row[3] is not None:
            words = row[3].split(" ", 4)
            if len(words) == 5 and words[0].lstrip("-").isdigit() \
                    and words[1].lstrip("-").isdigit():
                position, attempts, status, kind, name = words
                row = (*row[:3], f"[{int(position)},{int(attempts)},{_json(status)},"
                                 f"{_json(kind)},{_json(name)}]")
        yield row


def _write(dst: _Side, name: str, cols: list[str], rows: Iterable[tuple[Any, ...]]) -> int:
    """Write ``rows`` into the target's table ``name``; return how many."""
    n = 0
    if dst.kind == "postgres":
        with dst.conn.cursor() as cur, cur.copy(
                f"COPY {dst.t(name)} ({', '.join(cols)}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
                n += 1
        return n

    def counted() -> Iterator[tuple[Any, ...]]:
        nonlocal n
        for row in rows:
            n += 1
            yield row

    marks = ", ".join("?" * len(cols))
    dst.conn.executemany(f"INSERT INTO {dst.t(name)} ({', '.join(cols)}) VALUES ({marks})",
                         counted())
    return n


def _columns(src: _Side, dst: _Side, name: str) -> list[str]:
    """The columns of table ``name`` the copy writes (the target's, less a PostgreSQL
    run event's ``txid`` from SQLite).

    Raises: StoreError (the two schemas differ: a table this copy does not know)."""
    if name == "run_events":
        return (["run_id", "event_id", "kind", "data"] if dst.kind == "sqlite"
                else ["run_id", "event_id", "kind", "data", "txid"])
    cols = dst.columns(name)
    missing = set(cols) - set(src.columns(name))
    if missing:
        raise StoreError(
            f"table {name} of the target has columns the source's has not "
            f"({', '.join(sorted(missing))}): this version of tether db copy does not "
            "know them; nothing was copied")
    return cols


def _tables_to_copy(src: _Side, dst: _Side) -> list[str]:
    names = list(COPIED)
    if src.kind == dst.kind == "sqlite":
        names.append("leases")
    return names


def _begin_target(dst: _Side, names: list[str]) -> list[tuple[str, str]]:
    """Begin the target's write transaction, holding the store (a process that opens it
    meanwhile waits), with its triggers off (their rows are copied instead); return the
    triggers to put back (SQLite's, by name and statement).

    Raises: CopyRefused (the target holds something)."""
    saved: list[tuple[str, str]] = []
    if dst.kind == "sqlite":
        dst.conn.execute("BEGIN IMMEDIATE")
    else:
        from tether.store.postgres._migrate import lock_key

        dst.conn.execute("BEGIN")
        dst.conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        dst.conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(dst.schema),))
        dst.conn.execute(f"LOCK TABLE {dst.t('schema_version')} IN ACCESS EXCLUSIVE MODE")
    held = [name for name in names if dst.one(f"SELECT 1 FROM {dst.t(name)} LIMIT 1")]
    if held:
        runs = dst.one(f"SELECT count(*) FROM {dst.t('runs')}") or 0
        what = ", ".join(f"{runs:,} run{'' if runs == 1 else 's'}" if n == "runs" else n
                         for n in held)
        raise CopyRefused(
            f"the target ({dst.where}) is not empty (it holds {what}): a copy goes into "
            "an empty store only; give a new file or database, or an empty schema "
            "(?schema= in the URL)")
    if dst.kind == "sqlite":
        saved = [(r[0], r[1]) for r in dst.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name")]
        for trigger, _ in saved:
            dst.conn.execute(f"DROP TRIGGER {trigger}")
    else:
        dst.conn.execute(f"ALTER TABLE {dst.t('journal')} DISABLE TRIGGER USER")
    return saved


def _end_target(dst: _Side, saved: list[tuple[str, str]]) -> None:
    """Put the triggers back, and the target's counters past the ids copied."""
    if dst.kind == "sqlite":
        for _, sql in saved:
            dst.conn.execute(sql)
        return  # (AUTOINCREMENT's counter follows the ids inserted)
    dst.conn.execute(f"ALTER TABLE {dst.t('journal')} ENABLE TRIGGER USER")
    for name, column in (("signals", "signal_id"), ("run_events", "event_id")):
        dst.conn.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, %s), m) FROM (SELECT max({column}) "
            f"AS m FROM {dst.t(name)}) t WHERE m IS NOT NULL", (dst.t(name), column))


def _copy_rows(src: _Side, dst: _Side, names: list[str]) -> dict[str, int]:
    """Copy every table; return the rows written per table."""
    counts: dict[str, int] = {}
    for name in names:
        cols = _columns(src, dst, name)
        rows = src.rows(_source_sql(src, dst, name, cols))
        if name == "run_events" and src.kind == "postgres" and dst.kind == "sqlite":
            rows = _ops_to_sqlite(rows)
        counts[name] = _write(dst, name, cols, rows)
    return counts


# -- the copy ---------------------------------------------------------------------------


def _same_store(src: _Side, dst: _Side) -> bool:
    if src.kind != dst.kind:
        return False
    if src.kind == "sqlite":
        a, b = os.path.abspath(src.store.path), os.path.abspath(dst.store.path)
        return a == b or (os.path.exists(b) and os.path.samefile(a, b))
    return bool(src.store.cfg.where == dst.store.cfg.where and src.schema == dst.schema)


def _check_schema(side: _Side, role: str) -> None:
    """Refuse a store of a schema this code cannot copy from (``role``: ``source``) or
    into (``target``), before anything is done (``_refuse_versions``).

    Raises: CopyRefused, StoreUnavailable."""
    if side.kind == "sqlite" and (not os.path.exists(side.store.path)
                                  or os.path.getsize(side.store.path) == 0):
        if role == "source":
            raise CopyRefused(f"no Tether store at {side.where} (check --db)")
        return
    side.connect()
    try:
        with side.errors():
            if side.kind == "sqlite":
                side.conn.execute("PRAGMA query_only=ON")
            _refuse_versions(side, f"the {role} ({side.where})", side.tables(),
                             source=role == "source")
    finally:
        side.close()


async def _prepare_target(dst: _Side) -> list[str]:
    """Create or migrate the target; return the migrations applied.

    Raises: CopyRefused (not a Tether store, or one that cannot be migrated)."""
    try:
        created: list[str] = await dst.store.migrate()
    except ConfigError as exc:
        raise CopyRefused(f"the target: {exc}") from None
    return created


async def copy_store(source: str, target: str) -> CopyResult:
    """Copy every run of the store at URL ``source`` (and its schedules, queue
    settings, texts, ...: ``COPIED``) into the empty store at URL ``target``, of the
    same kind or the other (SQLite, PostgreSQL). The source is only read; the target
    is created or migrated if needed, then written in one transaction: a copy that
    fails or is killed leaves it empty. Stop the source's workers first; start the
    workers on the target after.

    Raises: CopyRefused (neither store changed: the source in use, behind, newer or
    not a Tether store; the target in use, not empty, newer, or the source itself),
    ConfigError (a URL no store takes), StoreUnavailable (a store cannot be reached),
    StoreError.
    """
    from tether.store import open_store

    began = time.monotonic()
    src_store = open_store(source, **({"read_only": True} if source.startswith("sqlite:")
                                      else {"migrate": False}))
    dst_store = open_store(target)
    src, dst = _Side(src_store), _Side(dst_store)
    if _same_store(src, dst):
        raise CopyRefused(f"the target is the source ({src.where}): copy into another "
                          "store")
    await asyncio.to_thread(_check_schema, src, "source")
    await asyncio.to_thread(_check_schema, dst, "target")
    await _refuse_live(src, "source")
    try:
        with dst.own():
            await _refuse_live(dst, "target")
            created = await _prepare_target(dst)
        try:
            await asyncio.to_thread(src.connect)
            await asyncio.to_thread(dst.connect)
            version, counts, reader = await asyncio.to_thread(_read_and_write, src, dst)
            _faults.point("copy.read")
            # A worker that started on the source during the copy may have changed it
            # since the snapshot read: the copy is not kept.
            await _refuse_live(src, "source", reader)
            _faults.point("copy.written")
            with dst.errors():
                await asyncio.to_thread(dst.conn.execute, "COMMIT")
            runs, waiting = await asyncio.to_thread(_runs, dst)
        finally:
            await asyncio.to_thread(src.close)
            await asyncio.to_thread(dst.close)  # (uncommitted: rolled back)
    except StoreError as exc:
        raise await asyncio.to_thread(_not_owner, dst, exc) from exc.__cause__
    return CopyResult(source=src.where, target=dst.where, counts=counts, runs=runs,
                      waiting=waiting, schema_version=version, created=created,
                      seconds=time.monotonic() - began)


def _read_and_write(src: _Side, dst: _Side) -> tuple[int, dict[str, int], int | None]:
    """Read the source in one snapshot, write it into the target's transaction (left
    open: the caller commits it); return the schema version, the rows per table and
    the source's backend pid (PostgreSQL).

    Raises: CopyRefused, StoreError."""
    reader: int | None = None
    with src.errors():
        if src.kind == "sqlite":
            src.conn.execute("PRAGMA query_only=ON")
            src.conn.execute("BEGIN")
        else:
            src.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            reader = int(src.one("SELECT pg_backend_pid()"))
        tables = src.tables()
        version = _refuse_versions(src, f"the source ({src.where})", tables, source=True)
    names = _tables_to_copy(src, dst)
    with dst.errors():  # (the target's own, told as the target's)
        saved = _begin_target(dst, names)
    with dst.errors(), src.errors():
        counts = _copy_rows(src, dst, names)
    with dst.errors():
        _end_target(dst, saved)
    return version, counts, reader


def _not_owner(dst: _Side, exc: StoreError) -> StoreError:
    """``exc`` (raised by the copy from its target's check on) in one sentence naming
    the role a copy into PostgreSQL needs, when it is the server's "permission denied"
    to the target's role: the copy turns the journal's triggers off and sets the
    sequences, which only the owner of the schema's tables may (no grant does; the
    store's message said to grant privileges, which a worker's role has already)."""
    import psycopg

    from tether.store.postgres._config import role_of

    if (dst.kind != "postgres" or exc.sqlstate != "42501"
            or exc.__cause__ is not dst.denied):  # (not the target's: the source's)
        return exc
    cfg = dst.store.cfg
    role = role_of(cfg)
    owner = None
    with contextlib.suppress(Exception), psycopg.connect(
            cfg.conninfo, autocommit=True, application_name=APP_NAME) as conn:
        row = conn.execute(  # (the journal's, whose triggers the copy turns off)
            "SELECT coalesce((SELECT tableowner::text FROM pg_tables WHERE schemaname = %s "
            "AND tablename = 'journal'), (SELECT nspowner::regrole::text FROM pg_namespace "
            "WHERE nspname = %s))", (cfg.schema, cfg.schema)).fetchone()
        owner = row[0] if row else None
    why = str(exc.__cause__).strip().splitlines()[0]
    return StoreError(
        f"PostgreSQL role {role!r} may not copy into the Tether store in schema "
        f"{cfg.schema!r} at {cfg.where} ({why}; nothing was copied): a copy into "
        "PostgreSQL turns the journal's triggers off and sets the schema's sequences, "
        "which only the role that owns the schema may, so run it as "
        + (f"that role, {owner!r}" if owner else "that role")
        + " (the role that ran its migrations; docs/postgres.md, \"Roles and "
        "privileges\")")


def _runs(dst: _Side) -> tuple[int, int]:
    with dst.errors():
        row = dst.conn.execute(
            f"SELECT count(*), coalesce(sum(CASE WHEN status = 'waiting' THEN 1 ELSE 0 "
            f"END), 0) FROM {dst.t('runs')}").fetchone()
    return int(row[0]), int(row[1])


