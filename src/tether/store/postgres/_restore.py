"""``tether db restore`` into a PostgreSQL store.

``tether db backup`` writes ``pg_dump --format=custom --schema=SCHEMA``. The restore
reads the dump's table of contents (``pg_restore --list``: it must hold Tether's tables
in the store's schema) and its ``schema_version`` rows (a newer schema is refused), then
runs, through ``psql --single-transaction``, one script: drop Tether's own tables and
functions if the target has a Tether store (``force`` when it holds runs), create the
schema if missing, pg_restore's script of the dump (without its CREATE SCHEMA), and
the deletion of the source store's worker registrations (``_script_footer``). One
transaction: a failure anywhere changes nothing, and a reader sees the old store or the
restored one. Nothing else in the database or the schema is dropped: a view of
another schema that depends on Tether's tables makes the restore fail, rolled back.

A store in use is one with a worker whose heartbeat is fresh (its row in
``workers``; one of this host only while its process lives and Tether sessions are
connected to this database), a ``tether serve`` or ``tether mcp`` holding the schema's
presence lock (``_presence``), or with Tether's sessions (``application_name``
``tether*`` in ``pg_stat_activity``: workers, ``tether serve``) whose last query names
the schema, or names none in a database with no other Tether schema.

The check is made twice: before anything is done, and again inside the restore's
transaction once it holds the locks every Tether process needs (``_locks``), before
anything is dropped. A process that began using the store after the first check is
seen by the second (the restore is refused, rolled back); one that opens the store
after the locks were taken waits for them at its first read of ``schema_version``,
and reads the restored store once it is committed. A worker started during a
restore therefore never holds a run of the old store in the restored one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tether import _faults
from tether._procs import process_alive
from tether.errors import ConfigError, StoreError
from tether.store._port import WorkerInfo
from tether.store._restore import (
    RestoreRefused,
    RestoreResult,
    file_kind,
    fresh,
    in_use_by,
    newer_schema,
    wrong_kind,
)
from tether.store._sql import load_migrations
from tether.store.postgres._config import translate_errors
from tether.store.postgres._migrate import lock_key
from tether.store.postgres._presence import (
    HOLDERS_SQL,
    PRESENCE_CLASS,
    parse_name,
    presence_key,
)

if TYPE_CHECKING:
    from tether.store.postgres._store import PostgresStore

_PACKAGE = "tether.store.postgres"
#: How long the restore's transaction waits for a lock on Tether's tables (a session
#: that holds one is using the store) before it gives up, changing nothing.
LOCK_TIMEOUT = "10s"
_TOC_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE (\S+) (\S+) ")
_TOC_SCHEMA = re.compile(r"^\d+; \d+ \d+ (SCHEMA|COMMENT|ACL) - (SCHEMA )?(\S+)( |$)")


def _tools() -> tuple[str, str]:
    found = {name: shutil.which(name) for name in ("pg_restore", "psql")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on the "
            "PATH: install PostgreSQL's client programs (Debian and Ubuntu: apt-get install "
            "postgresql-client, of the server's major version or newer)")
    return found["pg_restore"] or "", found["psql"] or ""


def tether_objects() -> tuple[list[str], list[str]]:
    """The tables and functions Tether's migrations create (without the schema)."""
    tables, functions = ["schema_version"], []
    for _, _, sql in load_migrations(_PACKAGE):
        tables += re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?\{schema\}\.(\w+)", sql)
        functions += re.findall(r"CREATE (?:OR REPLACE )?FUNCTION \{schema\}\.(\w+)", sql)
    return list(dict.fromkeys(tables)), list(dict.fromkeys(functions))


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, errors="replace", check=False)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no message"


def _psql_error(text: str) -> str:
    """psql's ERROR line (less its ``psql:<stdin>:N:`` prefix) and its DETAIL."""
    lines = text.strip().splitlines()
    for i, line in enumerate(lines):
        if "ERROR:" in line:
            said = " ".join(line.split("ERROR:", 1)[1].split())
            if i + 1 < len(lines) and lines[i + 1].startswith("DETAIL:"):
                said += " (" + " ".join(lines[i + 1][len("DETAIL:"):].split()) + ")"
            return said
    return _last_line(text)


@dataclass
class _Dump:
    toc: str
    schemas: set[str]
    versions: set[int]


def _read_dump(pg_restore: str, path: str, schema: str, env: dict[str, str]) -> _Dump:
    """The dump's table of contents and its schema versions.

    Raises: RestoreRefused (not a Tether dump of ``schema``)."""
    listed = _run([pg_restore, "--list", path], env)
    if listed.returncode != 0:
        raise RestoreRefused(f"{path} is damaged or not a pg_dump archive: pg_restore "
                             f"cannot read it ({_last_line(listed.stderr)})")
    tables: dict[str, set[str]] = {}
    for line in listed.stdout.splitlines():
        m = _TOC_TABLE.match(line)
        if m:
            tables.setdefault(m.group(1), set()).add(m.group(2))
    schemas = {s for s, names in tables.items() if {"schema_version", "runs"} <= names}
    if not schemas:
        raise RestoreRefused(f"{path} is a PostgreSQL dump but not a Tether backup (it has "
                             "no Tether tables: schema_version, runs)")
    if schema not in schemas:
        names = ", ".join(sorted(schemas))
        raise RestoreRefused(
            f"{path} holds the Tether schema {names}, and the store uses schema "
            f"{schema!r}: restore it with ?schema={sorted(schemas)[0]} in the --db URL")
    data = _run([pg_restore, "--data-only", f"--schema={schema}",
                 "--table=schema_version", "--file=-", path], env)
    if data.returncode != 0:
        raise RestoreRefused(f"{path}: pg_restore cannot read its schema versions "
                             f"({_last_line(data.stderr)})")
    versions: set[int] = set()
    copying = False
    for line in data.stdout.splitlines():
        if line.startswith("COPY ") and ".schema_version " in line:
            copying = True
        elif copying and line == "\\.":
            copying = False
        elif copying and line:
            versions.add(int(line.split("\t", 1)[0]))
    return _Dump(listed.stdout, schemas, versions)


@dataclass
class _Target:
    has_store: bool
    runs: int
    schedules: int


async def _target(store: PostgresStore, force: bool, locker: int | None = None,
                  again: str = "the restore") -> _Target:
    """Check the target may be restored into. ``locker``: the backend pid of the
    restore's own transaction, which holds the store's locks (``_LOCK``): the check
    is then made again under them, that session left out, and ``schema_version``
    (which it holds exclusively) not read (it was, by the first check). ``again``: the
    command refused (``the copy`` checks its source and target here too), which the
    message says to run again.

    Raises: RestoreRefused, StoreUnavailable."""
    schema = store.schema
    known = {v for v, _, _ in load_migrations(_PACKAGE)}
    async with store._direct() as conn, conn.cursor() as cur:
        with translate_errors(store.cfg):
            await cur.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            await cur.execute("SELECT to_regclass(%s) IS NOT NULL, "
                              "extract(epoch FROM clock_timestamp())::float8",
                              (f"{schema}.schema_version",))
            row = await cur.fetchone()
            assert row is not None
            has_store, now = bool(row[0]), float(row[1])
            runs = schedules = 0
            workers: list[WorkerInfo] = []
            if has_store:
                if locker is None:
                    await cur.execute(f"SELECT version FROM {schema}.schema_version")
                    unknown = {int(r[0]) for r in await cur.fetchall()} - known
                    if unknown:
                        raise newer_schema(
                            f"the store (schema {schema} at {store.cfg.where})", unknown,
                            known)
                runs = await _count(cur, schema, "runs")
                schedules = await _count(cur, schema, "schedules")
                if await _exists(cur, schema, "workers"):
                    await cur.execute(
                        "SELECT worker_id, hostname, pid, pid_start, queues, started_at, "
                        f"heartbeat_at FROM {schema}.workers ORDER BY started_at")
                    workers = [WorkerInfo(*r) for r in await cur.fetchall()]
            await cur.execute(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relname = 'schema_version' "
                "AND c.relkind IN ('r', 'p') AND EXISTS (SELECT FROM pg_class r WHERE "
                "r.relnamespace = n.oid AND r.relname = 'runs')")
            others = {r[0] for r in await cur.fetchall()} - {schema}
            await cur.execute(
                "SELECT pid, application_name, coalesce(host(client_addr), 'local'), "
                "backend_start::text, coalesce(query, '') FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND pid IS DISTINCT FROM %s AND application_name LIKE 'tether%%'",
                (locker,))
            sessions = [r for r in await cur.fetchall()
                        if _names(str(r[4]), schema, others) and not parse_name(str(r[1]))]
            await cur.execute(HOLDERS_SQL, (PRESENCE_CLASS, presence_key(schema)))
            present = [r for r in await cur.fetchall() if r[0] != locker]
    where = f"schema {schema} at {store.cfg.where}"
    host = socket.gethostname()
    live = [w for w in workers if fresh(w, now) and not (
        # (dead, or a worker of another store: a row the backup held)
        w.hostname == host and not (sessions and process_alive(w.pid, w.pid_start)))]
    if live:
        raise RestoreRefused(
            f"the store ({where}) is in use by {in_use_by(live, now, host, again)}")
    if present:
        raise RestoreRefused(f"the store ({where}) is in use by "
                             f"{_present_by(present, host, again)}")
    if sessions:
        pid, app, client, since, _ = sessions[0]
        more = f" and {len(sessions) - 1} more" if len(sessions) > 1 else ""
        raise RestoreRefused(
            f"the store ({where}) is in use: PostgreSQL session {pid} ({app} from {client}, "
            f"connected since {since[:19]}){more}, a tether serve or worker: stop the "
            f"Tether processes using it (kill -TERM), then run {again} again")
    if (runs or schedules) and not force:
        held = f"{runs} run{'s' if runs != 1 else ''}" + (
            f" and {schedules} schedule{'s' if schedules != 1 else ''}" if schedules else "")
        raise RestoreRefused(
            f"the store ({where}) holds {held}: a restore would replace what it holds; "
            "restore into a new database or schema, or give --force to replace it "
            "(Tether's tables only)")
    return _Target(has_store, runs, schedules)


def _present_by(sessions: list[Any], host: str, again: str) -> str:
    """The processes holding the schema's presence lock (``_presence``: ``tether
    serve``, ``tether mcp``), named by kind, pid and host, with how to stop them."""
    named, kills = [], []
    for backend, app, client, since in sessions:
        session = (f"PostgreSQL session {backend} from {client}, connected since "
                   f"{str(since)[:19]}")
        said = parse_name(str(app))
        if said is None:  # (not named as Tether names it: the session is what is known)
            named.append(f"a Tether process ({session})")
            kills.append(f"pg_terminate_backend({backend})")
            continue
        kind, pid, on = said
        named.append(f"tether {kind} (pid {pid} on {on}, {session})")
        kills.append(f"kill -TERM {pid}" + ("" if on == host else f" on {on}"))
    return (f"{', '.join(named)}: stop {'it' if len(named) == 1 else 'them'} "
            f"({'; '.join(kills)}), then run {again} again")


async def _exists(cur: Any, schema: str, table: str) -> bool:
    await cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{table}",))
    row = await cur.fetchone()
    return bool(row and row[0])


async def _count(cur: Any, schema: str, table: str) -> int:
    if not await _exists(cur, schema, table):
        return 0
    await cur.execute(f"SELECT count(*) FROM {schema}.{table}")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def _names(query: str, schema: str, others: set[str]) -> bool:
    """Whether a session whose last query is ``query`` may be using ``schema``: it
    names it, or names no Tether schema and the database has no other.

    A schema is named by one of Tether's tables or functions in it (``r.runs``,
    ``r.publish(``) or by its channel (``r_wake``): a bare ``r.`` is as often a table's
    alias (``FROM c.runs r ... r.run_id``, a worker's heartbeat on schema ``c``), which
    made a copy or restore of schema ``r`` refused while workers ran on another."""
    def said(name: str) -> bool:
        return re.search(rf'(?<![\w"]){re.escape(name)}\.(?:{_OBJECTS})\b'
                         rf'|(?<![\w"]){re.escape(name)}_wake\b|"{re.escape(name)}_wake"',
                         query) is not None
    return said(schema) or not others


#: Tether's tables and functions, as a regular expression's alternatives (``_names``).
_OBJECTS = "|".join(re.escape(n) for n in sorted(
    {*tether_objects()[0], *tether_objects()[1]}, key=len, reverse=True))


#: What psql prints, with its session's pid, once the restore's transaction holds the
#: store's locks (``_locks``).
_LOCKED = "tether-restore-locked "


def _locks(schema: str) -> bytes:
    """The script's start: take the locks every Tether process needs to use the store,
    then say so (``_LOCKED``). The migrations' advisory lock (a process creating or
    migrating the store waits), ``ACCESS EXCLUSIVE`` on ``schema_version`` (a worker,
    ``tether serve`` or ``App`` reads it as it opens the store: one opening meanwhile
    waits, having read nothing, and after the commit reads the restored store) and
    ``EXCLUSIVE`` on Tether's other tables (a worker's registration, claims, journal
    writes and heartbeats wait; reads do not, so the check made under the locks can
    read them from another session). Whichever tables exist at that moment."""
    tables, _ = tether_objects()
    names = ", ".join(f"'{t}'" for t in tables)
    return (
        f"SET lock_timeout = '{LOCK_TIMEOUT}';\n"
        # (idle in its transaction while the check runs: as pg_restore's script sets it)
        "SET idle_in_transaction_session_timeout = 0;\n"
        f"SELECT pg_advisory_xact_lock({lock_key(schema)});\n"
        "DO $tether$ DECLARE t text; BEGIN\n"
        "FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
        f"c.relnamespace WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'p') "
        f"AND c.relname IN ({names}) ORDER BY c.relname <> 'schema_version', c.relname\n"
        f"LOOP EXECUTE format('LOCK TABLE {schema}.%I IN %s MODE', t, CASE WHEN t = "
        "'schema_version' THEN 'ACCESS EXCLUSIVE' ELSE 'EXCLUSIVE' END); END LOOP;\n"
        "END $tether$;\n"
        f"SELECT '{_LOCKED}' || pg_backend_pid();\n").encode()


def _script_header(schema: str, drop: bool) -> bytes:
    tables, functions = tether_objects()
    lines = [f"\\o {os.devnull}"]  # (the rest of the script's output is not read)
    if drop:
        lines.append("DROP TABLE IF EXISTS "
                     + ", ".join(f"{schema}.{t}" for t in tables) + ";")
        lines += [f"DROP FUNCTION IF EXISTS {schema}.{f};" for f in functions]
    lines.append(f"CREATE SCHEMA IF NOT EXISTS {schema};")
    return ("\n".join(lines) + "\n").encode()


def _script_footer(schema: str) -> bytes:
    """The script's end: the source store's worker registrations are left out (no
    worker of it is attached to the restored store; its rows, heartbeats up to a minute
    old, would list them live)."""
    return ("DO $tether$ BEGIN\n"
            f"IF to_regclass('{schema}.workers') IS NOT NULL THEN "
            f"DELETE FROM {schema}.workers; END IF;\n"
            "END $tether$;\n").encode()


def _apply(pg_restore: str, psql: str, path: str, toc: str, schema: str,
           check: Callable[[int], bool], conninfo: str, env: dict[str, str]) -> None:
    """Run pg_restore's script of the dump (less its CREATE SCHEMA), after the header,
    in one transaction through psql; psql is killed (its transaction rolled back) if
    pg_restore fails partway, or the check refuses. The transaction first takes the store's locks
    (``_locks``); then ``check(pid of its session)`` checks the target again under
    them and says whether it holds a Tether store (whose tables are dropped).

    Raises: RestoreRefused (by ``check``), StoreError (pg_restore or psql failed);
    nothing changed."""
    kept = []
    for line in toc.splitlines():
        m = _TOC_SCHEMA.match(line)
        kept.append(f";{line}" if m and m.group(3) == schema else line)
    with tempfile.TemporaryDirectory(prefix="tether-restore-") as folder:
        listing = os.path.join(folder, "toc")
        with open(listing, "w") as f:
            f.write("\n".join(kept) + "\n")
        errors_a = open(os.path.join(folder, "pg_restore.err"), "w+")
        errors_b = open(os.path.join(folder, "psql.err"), "w+")
        with errors_a, errors_b:
            dumper = subprocess.Popen(
                [pg_restore, "--no-owner", f"--schema={schema}", f"--use-list={listing}",
                 "--file=-", path], env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=errors_a)
            loader = subprocess.Popen(
                [psql, "--no-psqlrc", "--quiet", "--single-transaction",
                 "--set=ON_ERROR_STOP=1", "--no-align", "--tuples-only", "--file=-",
                 f"--dbname={conninfo}"],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors_b)
            assert dumper.stdout is not None and loader.stdin is not None
            assert loader.stdout is not None
            try:
                try:
                    loader.stdin.write(_locks(schema))
                    loader.stdin.flush()
                    locker = _locked(loader.stdout)
                    broken = locker is None
                    if locker is not None:
                        drop = check(locker)
                        _faults.point("restore.locked")
                        loader.stdin.write(_script_header(schema, drop))
                        shutil.copyfileobj(dumper.stdout, loader.stdin, 1 << 16)
                        loader.stdin.write(_script_footer(schema))
                    else:
                        dumper.kill()
                except BrokenPipeError:  # psql ended early: its error says why
                    broken = True
                    dumper.kill()
                except BaseException:  # (a refusal: no COMMIT)
                    loader.kill()
                    dumper.kill()
                    raise
                dumped = dumper.wait()
                if dumped != 0 and not broken:
                    loader.kill()  # (before its input ends: no COMMIT)
                    loader.wait()
                    errors_a.seek(0)
                    raise StoreError(f"pg_restore failed (exit {dumped}) on {path}: "
                                     f"{_last_line(errors_a.read())}; nothing was changed")
                with contextlib.suppress(BrokenPipeError):
                    loader.stdin.close()
                loaded = loader.wait()
            finally:
                dumper.stdout.close()
                loader.stdout.close()
                # (Left open by a refusal or a failed pg_restore: closed here, or its
                # garbage collection warns of an unclosed file in whatever runs next.)
                with contextlib.suppress(OSError):  # (BrokenPipeError: psql ended)
                    loader.stdin.close()
                for proc in (dumper, loader):
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            if loaded == 0 and broken:
                raise StoreError("psql ended before the restore's script did (exit 0); "
                                 "check the store: run the restore again")
            if loaded != 0:
                errors_b.seek(0)
                err = _psql_error(errors_b.read())
                if "lock timeout" in err:
                    err += (" (a session holds a lock on the store's tables: stop the "
                            "processes using it)")
                raise StoreError(f"the restore failed (psql exit {loaded}): {err}; "
                                 "nothing was changed")


def _locked(out: Any) -> int | None:
    """The pid psql's session says once it holds the store's locks (``_LOCKED``), or
    None if psql ended first (its error says why)."""
    for raw in out:
        line = raw.decode(errors="replace").strip()
        if line.startswith(_LOCKED):
            return int(line[len(_LOCKED):])
    return None


async def restore(store: PostgresStore, backup: str, *, force: bool) -> RestoreResult:
    """Restore the dump ``backup`` into ``store`` (see the module).

    Raises: RestoreRefused (nothing changed), ConfigError, StoreError, StoreUnavailable.
    """
    kind = file_kind(backup)
    if kind != "pgdump":
        raise wrong_kind(backup, kind, "postgres")
    pg_restore, psql = _tools()
    params: dict[str, Any] = conninfo_to_dict(store.cfg.conninfo)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    params["application_name"] = "tether-restore"
    conninfo = make_conninfo("", **params)
    schema = store.schema
    dump = await asyncio.to_thread(_read_dump, pg_restore, backup, schema, env)
    known = {v: name for v, name, _ in load_migrations(_PACKAGE)}
    unknown = dump.versions - set(known)
    if unknown:
        raise newer_schema(f"the backup {backup}", unknown, known)
    target = await _target(store, force)
    _faults.point("restore.checked")
    loop = asyncio.get_running_loop()

    def check(locker: int) -> bool:
        """The check again, under the restore's locks (from psql's thread): a process
        that started using the store since the first is refused here; one that starts
        from now on waits for the locks until the restore is committed."""
        nonlocal target
        target = asyncio.run_coroutine_threadsafe(
            _target(store, force, locker), loop).result()
        return target.has_store

    await asyncio.to_thread(_apply, pg_restore, psql, backup, dump.toc, schema, check,
                            conninfo, env)
    migrated: list[str] = []
    pending = [f"{v:04d}_{n}" for v, n in known.items() if v not in dump.versions]
    if pending and store.auto_migrate:
        migrated = await store.migrate()
        pending = []
    async with store._direct() as conn, conn.cursor() as cur:
        with translate_errors(store.cfg):
            await cur.execute(
                "SELECT count(*), count(*) FILTER (WHERE status = 'waiting') "
                f"FROM {schema}.runs")
            row = await cur.fetchone()
            await cur.execute(f"SELECT max(version) FROM {schema}.schema_version")
            top = await cur.fetchone()
    runs, waiting = (int(row[0]), int(row[1])) if row else (0, 0)
    return RestoreResult(
        target=f"schema {schema} at {store.cfg.where}", runs=runs, waiting=waiting,
        backup_schema_version=max(dump.versions, default=0),
        schema_version=int(top[0]) if top and top[0] is not None else 0,
        migrated=migrated, pending=pending, replaced_runs=target.runs)
