"""``tether db restore BACKUP``: a backup taken by ``tether db backup`` (of a store a
worker is using) restored into a new store with real ``tether`` processes, where the
runs, their journals and a waiting run's signal work; and every refusal, each leaving
the target as it was: a store that holds runs (without --force), a store in use (a
worker, a ``tether serve``, a worker of another host that heartbeated lately), a file
that is not a Tether backup, a backup of a newer schema. An older schema is migrated.
PostgreSQL: real databases, ``pg_restore`` and ``psql``; --force drops Tether's tables
only."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import psycopg
import pytest

from tests import forked
from tests.conftest import DB_PREFIX, _create_database, _database_url, _drop_database
from tests.forked import stop_process
from tether import App, _faults
from tether.store import WorkerInfo, open_store
from tether.store._restore import RestoreRefused
from tether.store.sqlite._restore import shm_holders

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cli.backup_app:app"
#: An app with an MCP tool, for `tether mcp` on a store being restored into.
MCP_APP = "tests.cli.copy_app:app"

needs_pg_tools = pytest.mark.skipif(
    any(shutil.which(p) is None for p in ("pg_dump", "pg_restore", "psql")),
    reason="PostgreSQL's client programs (pg_dump, pg_restore, psql) are not here")


def _newest_migration(backend: str, schema: str = "") -> tuple[int, str, str]:
    """The newest migration of ``backend`` (``sqlite``, ``postgres``): its number, its
    name and the statement that undoes it, which the older-schema tests run to make a
    backup one migration behind: each migration since 0014 creates an index (the first
    it creates is dropped: the migration creates it again, its other statements being
    idempotent), adds columns (0019, 0023: each column it adds is dropped) or creates a
    trigger (0020: the trigger is dropped; PostgreSQL's function it calls is created
    again by ``CREATE OR REPLACE``); a newer one that does none of these must be undone
    here by hand. ``schema``: the tables' prefix (``tether.``)."""
    folder = Path(__file__).parents[2] / "src" / "tether" / "store" / backend / "migrations"
    newest = max(folder.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    sql = newest.read_text()
    columns = re.findall(r"ALTER TABLE (?:\{schema\}\.)?(\w+) ADD COLUMN "
                         r"(?:IF NOT EXISTS )?(\w+)", sql)
    index = re.search(r"CREATE INDEX (?:IF NOT EXISTS )?(\w+)\s+ON", sql)
    trigger = re.search(r"CREATE TRIGGER (\w+) .*? ON (?:\{schema\}\.)?(\w+)", sql)
    if columns:
        undo = "; ".join(f"ALTER TABLE {schema}{table} DROP COLUMN {column}"
                         for table, column in columns)
    elif index is not None:
        undo = f"DROP INDEX {schema}{index.group(1)}"
    else:
        assert trigger is not None, (f"{newest.name} creates no index, adds no column "
                                     "and creates no trigger: undo it here by hand")
        undo = (f"DROP TRIGGER {trigger.group(1)} ON {schema}{trigger.group(2)}" if schema
                else f"DROP TRIGGER {trigger.group(1)}")
    return int(newest.name[:4]), newest.stem, undo


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, TETHER_TEST_SIDE_FILE=str(tmp / "side.txt"),
               PYTHONPATH=os.pathsep.join((str(ROOT / "src"), str(ROOT))), **extra)
    env.pop("TETHER_DATABASE_URL", None)
    return env


def _tether(tmp: Path, *args: str, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    return forked.run([sys.executable, "-m", "tether", *args], cwd=ROOT,
                      env=env or _env(tmp), capture_output=True, text=True, timeout=120)


def _worker(db: str, tmp: Path, name: str) -> subprocess.Popen[bytes]:
    with open(tmp / f"{name}.log", "wb") as out:
        return forked.Popen([sys.executable, "-m", "tether", "worker", APP, "--db", db],
                            cwd=ROOT, env=_env(tmp), stdout=out, stderr=subprocess.STDOUT)


async def _until(what: str, check: object, proc: subprocess.Popen[bytes] | None = None,
                 ) -> None:
    for _ in range(1200):  # (60 s)
        if await check():  # type: ignore[operator]
            return
        assert proc is None or proc.poll() is None, f"the process ended: {what}"
        await asyncio.sleep(0.05)
    raise AssertionError(f"never true: {what}")


async def _runs(url: str) -> dict[str, tuple[str, list[tuple[int, str, str]]]]:
    """Each run's status and journal (position, kind, status)."""
    app = App(url, **({"read_only": True} if url.startswith("sqlite:") else {}))
    try:
        out = {}
        for info in await app.list_runs(limit=100):
            run = await app.get_run(info.run_id)
            out[info.run_id] = (run.status, [(e["position"], e["kind"], e["status"])
                                             for e in run.journal])
        return out
    finally:
        await app.close()


async def _workers(url: str) -> list[WorkerInfo]:
    store = open_store(url, **({"read_only": True} if url.startswith("sqlite:") else {}))
    await store.open()
    try:
        return await store.worker_list()
    finally:
        await store.close()


def _long_lived(kind: str, db: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``tether serve`` (``kind`` ``serve``, on a free port, returned) or ``tether mcp
    --no-worker`` (``mcp``; its stdin kept open, as its client would): neither registers
    as a worker."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = (["serve", "--db", db, "--port", str(port)] if kind == "serve"
            else ["mcp", MCP_APP, "--db", db, "--no-worker"])
    # (not forked from the tests' zygote: a SQLite store's refusal tells the command
    # from the process's command line, which a fork of the zygote does not have)
    with open(tmp / f"{kind}.log", "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "tether", *args], cwd=ROOT,
                                env=_env(tmp), stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.STDOUT), port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, 60)
    if proc.stdin is not None:
        proc.stdin.close()


async def _opened(kind: str, proc: subprocess.Popen[bytes], port: int, db: str) -> None:
    """Until ``tether serve`` answers /healthz, or ``tether mcp`` has the store open
    (PostgreSQL: its presence session; SQLite: the file's ``-shm`` lock)."""
    if kind == "serve":
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                            timeout=5) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        async def ready() -> bool:
            return await asyncio.to_thread(healthy)
    elif db.startswith("sqlite:"):
        async def ready() -> bool:
            return proc.pid in shm_holders(db[len("sqlite:///"):])
    else:
        async def ready() -> bool:
            with psycopg.connect(db.split("?")[0], autocommit=True) as conn:
                return bool(conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
                    (f"tether-mcp {proc.pid}@{socket.gethostname()}",)).fetchall())
    await _until(f"tether {kind} has the store open", ready, proc)



async def _source_in_use(tmp: Path, source: str) -> tuple[subprocess.Popen[bytes], Path]:
    """A store with a completed run and one waiting for a signal, its worker still
    running, and its backup (``tether db backup``, taken while the worker runs)."""
    (tmp / "gate").touch()
    app = App(source)
    try:
        await app.start("mid_step", str(tmp / "gate"), run_id="done")
        await app.start("waits", run_id="waiting")
        worker = _worker(source, tmp, "worker-a")

        async def settled() -> bool:
            return ((await app.get_run("done")).status == "completed"
                    and (await app.get_run("waiting")).status == "waiting")

        await _until("the runs settle", settled, worker)
    finally:
        await app.close()
    backup = tmp / "store.backup"
    out = _tether(tmp, "db", "backup", str(backup), "--db", source)
    assert out.returncode == 0, out.stderr
    return worker, backup


async def _round_trip(tmp: Path, source: str, target: str) -> None:
    worker_a, backup = await _source_in_use(tmp, source)
    try:
        before = await _runs(source)
        out = _tether(tmp, "db", "restore", str(backup), "--db", target)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(
            f"restored 2 runs (1 waiting) from {backup} into {target}\n"), out.stdout
        assert "next: start workers on it" in out.stdout
        # Worker A, live on the source store, is not attached to the restored one: the
        # backup has its row (heartbeat fresh), which the restore leaves out, so the
        # restored store lists no worker (tether workers, versions) and a restore into
        # it again is not refused.
        assert [w.worker_id for w in await _workers(source)] != []
        assert await _workers(target) == []
        again = _tether(tmp, "db", "restore", str(backup), "--db", target, "--force",
                        "--json")
        assert again.returncode == 0, again.stderr
        result = json.loads(again.stdout)
        assert (result["runs"], result["waiting"], result["replaced_runs"]) == (2, 1, 2)
        assert result["schema_version"] == result["backup_schema_version"] > 0
        assert result["migrated"] == result["pending"] == []
        assert result["restored"] is True and result["target"] == target
        assert await _workers(target) == []
        assert worker_a.poll() is None
    finally:
        stop_process(worker_a, 60)
    assert await _runs(target) == before
    worker_b = _worker(target, tmp, "worker-b")
    copy = App(target)
    try:
        assert await copy.signal("waiting", "go", {"to": "restored"})
        got = await asyncio.wait_for(copy.handle("waiting").result(), 60)
        assert got == {"to": "restored"}
        assert await asyncio.wait_for(copy.handle("done").result(), 10) == "through"
    finally:
        await copy.close()
        stop_process(worker_b, 60)
    assert worker_b.returncode == 0, (tmp / "worker-b.log").read_text()
    # The source store's waiting run still waits: the signal went to the copy only.
    assert (await _runs(source))["waiting"][0] == "waiting"


# -- SQLite ------------------------------------------------------------------------------


async def test_sqlite_round_trip_into_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "restored" / "tether.db"
    target.parent.mkdir()
    await _round_trip(tmp_path, f"sqlite:///{tmp_path / 'tether.db'}", f"sqlite:///{target}")
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p for p in os.listdir(target.parent) if "restore-" in p) == []
    assert sorted(p.name for p in tmp_path.glob("store.backup*")) == ["store.backup"]


async def _store_with_runs(url: str, *ids: str) -> None:
    app = App(url)
    try:
        for rid in ids:
            await app.start("waits", run_id=rid)
    finally:
        await app.close()


async def _backup_of(tmp: Path, *ids: str) -> Path:
    source = f"sqlite:///{tmp / 'source.db'}"
    await _store_with_runs(source, *ids)
    backup = tmp / "source.backup"
    out = _tether(tmp, "db", "backup", str(backup), "--db", source)
    assert out.returncode == 0, out.stderr
    return backup


async def test_sqlite_a_store_that_holds_runs_is_replaced_only_with_force(
        tmp_path: Path) -> None:
    backup = await _backup_of(tmp_path, "from-backup")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    await _store_with_runs(target, "kept-1", "kept-2")
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", target)
    assert out.returncode == 2
    assert out.stderr == (f"tether: error: {tmp_path / 'target.db'} holds 2 runs: a restore "
                          "would replace what it holds; restore into a new path, or give "
                          "--force to replace it\n")
    assert sorted(await _runs(target)) == ["kept-1", "kept-2"]
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", target, "--force")
    assert out.returncode == 0, out.stderr
    assert ", replacing 2 runs\n" in out.stdout
    assert sorted(await _runs(target)) == ["from-backup"]


async def test_sqlite_a_store_a_worker_uses_is_never_restored_into(tmp_path: Path) -> None:
    backup = await _backup_of(tmp_path, "from-backup")
    path = tmp_path / "target.db"
    target = f"sqlite:///{path}"
    await _store_with_runs(target, "kept")
    worker = _worker(target, tmp_path, "worker")
    try:
        async def registered() -> bool:
            return bool(await _workers(target))

        await _until("the worker registers", registered, worker)
        (info,) = await _workers(target)
        out = _tether(tmp_path, "db", "restore", str(backup), "--db", target, "--force")
        assert out.returncode == 2
        assert out.stderr.startswith(
            f"tether: error: {path} is in use by worker {info.worker_id} (pid "
            f"{worker.pid} on {socket.gethostname()}, last heartbeat "), out.stderr
        assert f"stop it (kill -TERM {worker.pid}: it hands its runs back" in out.stderr
        assert worker.poll() is None
    finally:
        stop_process(worker, 60)
    assert sorted(await _runs(target)) == ["kept"]
    # Stopped, it is no reason to refuse.
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", target, "--force")
    assert out.returncode == 0, out.stderr
    assert sorted(await _runs(target)) == ["from-backup"]


async def _refusal_with_two_workers(url: str, tmp_path: Path, backup: Path) -> None:
    """With two workers on the store ``url``, the refusal names both in its one line,
    with one ``kill -TERM`` for both pids: it named the first alone, so that an
    operator stopped it, ran the restore again, and only then learnt of the second."""
    workers = [_worker(url, tmp_path, f"worker-{n}") for n in (1, 2)]
    try:
        async def registered() -> bool:
            return len(await _workers(url)) == 2

        await _until("both workers register", registered)
        infos = await _workers(url)
        out = _tether(tmp_path, "db", "restore", str(backup), "--db", url, "--force")
        assert out.returncode == 2, out.stderr
        (line,) = out.stderr.splitlines()
        assert " is in use by 2 workers, worker " in line, line
        for info in infos:
            assert f"worker {info.worker_id} (pid {info.pid} on " in line, line
        kill = re.search(r"stop them \(kill -TERM (\d+) (\d+): a worker hands its runs "
                         r"back and leaves\); then run the restore again$", line)
        assert kill is not None, line
        assert sorted(kill.groups()) == sorted(str(info.pid) for info in infos), line
        assert all(w.poll() is None for w in workers)
    finally:
        for w in workers:
            stop_process(w, 60)


async def test_sqlite_a_refusal_names_every_worker_that_uses_the_store(
        tmp_path: Path) -> None:
    backup = await _backup_of(tmp_path, "from-backup")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    await _store_with_runs(target, "kept")
    await _refusal_with_two_workers(target, tmp_path, backup)
    assert sorted(await _runs(target)) == ["kept"]


async def test_sqlite_a_store_tether_serve_uses_is_never_restored_into(tmp_path: Path) -> None:
    backup = await _backup_of(tmp_path, "from-backup")
    path = tmp_path / "target.db"
    target = f"sqlite:///{path}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(tmp_path / "serve.log", "wb") as log:
        server = forked.Popen(
            [sys.executable, "-m", "tether", "serve", "--db", target, "--port", str(port)],
            cwd=ROOT, env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        async def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        await _until("tether serve answers /healthz", healthy, server)
        out = _tether(tmp_path, "db", "restore", str(backup), "--db", target)
        assert out.returncode == 2
        assert out.stderr.startswith(
            f"tether: error: {path} is in use by process {server.pid} ("), out.stderr
        assert f"stop it (kill -TERM {server.pid}), then run the restore again" in out.stderr
    finally:
        stop_process(server, 60)
    assert await _runs(target) == {}  # (the store serve made, untouched)


async def test_sqlite_a_store_another_restore_holds_is_refused(tmp_path: Path) -> None:
    """A store held exclusively (as a restore into it holds it through its copy): the
    restore's check cannot read it and refuses, exit 2 (it was a traceback)."""
    backup = await _backup_of(tmp_path, "from-backup")
    path = tmp_path / "target.db"
    await _store_with_runs(f"sqlite:///{path}", "kept")
    holder = apsw.Connection(str(path))
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
        holder.execute("BEGIN EXCLUSIVE; COMMIT")
        out = _tether(tmp_path, "db", "restore", str(backup), "--db", f"sqlite:///{path}",
                      "--force")
    finally:
        holder.close()
    assert (out.returncode, out.stderr) == (2, (
        f"tether: error: {path} is in use: another process holds it locked (another "
        "restore into it?): wait for it to end, then run the restore again\n"))
    assert sorted(await _runs(f"sqlite:///{path}")) == ["kept"]


async def test_sqlite_a_worker_of_another_host_that_heartbeated_lately_refuses(
        tmp_path: Path) -> None:
    backup = await _backup_of(tmp_path, "from-backup")
    path = tmp_path / "target.db"
    await _store_with_runs(f"sqlite:///{path}", "kept")
    conn = apsw.Connection(str(path))
    conn.execute("INSERT INTO tether_workers VALUES ('far:1:x', 'far-host', 4242, '', "
                 "'default', ?, ?)", (time.time(), time.time()))
    conn.close()
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", f"sqlite:///{path}")
    assert out.returncode == 2
    assert out.stderr.startswith(
        f"tether: error: {path} may be in use by worker far:1:x (pid 4242 on far-host, "), (
        out.stderr)
    assert "or, if that host is gone, wait until its last heartbeat is 60 s old" in out.stderr
    conn = apsw.Connection(str(path))
    conn.execute("UPDATE tether_workers SET heartbeat_at = ?", (time.time() - 120,))
    conn.close()
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", f"sqlite:///{path}",
                  "--force")
    assert out.returncode == 0, out.stderr


async def test_sqlite_a_file_that_is_not_a_tether_backup_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target.db"
    junk = tmp_path / "notes.txt"
    junk.write_text("not a backup at all, but long enough to be read\n")
    out = _tether(tmp_path, "db", "restore", str(junk), "--db", f"sqlite:///{target}")
    assert (out.returncode, out.stderr) == (2, (
        f"tether: error: {junk} is not a Tether backup: it is not a SQLite database "
        "(tether db backup of a SQLite store)\n"))
    other = tmp_path / "other.db"
    conn = apsw.Connection(str(other))
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.close()
    out = _tether(tmp_path, "db", "restore", str(other), "--db", f"sqlite:///{target}")
    assert (out.returncode, out.stderr) == (2, (
        f"tether: error: {other} is a SQLite database but not a Tether backup (its "
        "tables: invoices)\n"))
    missing = tmp_path / "missing.backup"
    out = _tether(tmp_path, "db", "restore", str(missing), "--db", f"sqlite:///{target}")
    assert (out.returncode, out.stderr) == (2, f"tether: error: no backup file {missing}\n")
    assert not target.exists()
    # Nor is a restore written over a file that is not a Tether store.
    backup = await _backup_of(tmp_path, "r")
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", f"sqlite:///{other}",
                  "--force")
    assert out.returncode == 2
    assert "other.db is not a Tether store (it holds other tables: invoices)" in out.stderr
    conn = apsw.Connection(str(other))
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]
    conn.close()


async def test_sqlite_a_backup_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    backup = await _backup_of(tmp_path, "r")
    newer = tmp_path / "newer.backup"
    shutil.copyfile(backup, newer)
    conn = apsw.Connection(str(newer))
    top = conn.execute("SELECT max(version) FROM tether_schema_version").fetchall()[0][0]
    conn.execute("INSERT INTO tether_schema_version VALUES (9999, 'future', 0)")
    known = max(top, conn.execute(
        "SELECT max(version) FROM tether_schema_compatible").fetchall()[0][0] or 0)
    conn.close()
    target = tmp_path / "target.db"
    out = _tether(tmp_path, "db", "restore", str(newer), "--db", f"sqlite:///{target}")
    assert (out.returncode, out.stderr) == (2, (
        f"tether: error: the backup {newer} has schema version 9999, newer than this "
        f"Tether knows (up to {known:04d}): restore it with the Tether version that wrote "
        "it, or upgrade tether\n"))
    assert not target.exists()


async def test_sqlite_a_backup_of_an_older_schema_is_migrated(tmp_path: Path) -> None:
    backup = await _backup_of(tmp_path, "r")
    older = tmp_path / "older.backup"
    shutil.copyfile(backup, older)
    number, name, undo = _newest_migration("sqlite")
    conn = apsw.Connection(str(older))
    conn.execute(f"{undo}; DELETE FROM tether_schema_compatible WHERE version = {number}")
    conn.close()
    target = tmp_path / "target.db"
    out = _tether(tmp_path, "db", "restore", str(older), "--db", f"sqlite:///{target}")
    assert out.returncode == 0, out.stderr
    assert f"schema migrated from {number - 1:04d} to {number:04d} ({name})\n" in out.stdout
    status = _tether(tmp_path, "db", "status", "--check", "--db", f"sqlite:///{target}")
    assert status.returncode == 0, status.stdout
    # With auto-migration off, it says what to run instead.
    off = tmp_path / "off.db"
    out = _tether(tmp_path, "db", "restore", str(older), "--db", f"sqlite:///{off}",
                  env=_env(tmp_path, TETHER_AUTO_MIGRATE="0"))
    assert out.returncode == 0, out.stderr
    assert (f"schema {number - 1:04d} is behind (pending: {name}): run `tether db "
            "migrate "
            "--db URL`") in out.stdout
    status = _tether(tmp_path, "db", "status", "--check", "--db", f"sqlite:///{off}")
    assert status.returncode == 1
    conn = apsw.Connection(str(off))
    assert conn.execute("SELECT run_id FROM tether_runs").fetchall() == [("r",)]
    conn.close()


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped after the test)."""
    name = f"{DB_PREFIX}restore_{uuid.uuid4().hex[:12]}"
    _create_database(name)
    try:
        yield _database_url(name)
    finally:
        _drop_database(name)



@pytest.mark.postgres
@needs_pg_tools
async def test_postgres_round_trip_into_a_new_database(
        tmp_path: Path, pg_migrated_url: str, pg_database: str) -> None:
    await _round_trip(tmp_path, pg_migrated_url, pg_database)


async def _pg_backup(tmp: Path, url: str, *ids: str) -> Path:
    await _store_with_runs(url, *ids)
    backup = tmp / f"{uuid.uuid4().hex[:6]}.dump"
    out = _tether(tmp, "db", "backup", str(backup), "--db", url)
    assert out.returncode == 0, out.stderr
    return backup


def _sql(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


@pytest.mark.postgres
@needs_pg_tools
async def test_postgres_force_replaces_tethers_tables_only(
        tmp_path: Path, pg_migrated_url: str, pg_database: str) -> None:
    backup = await _pg_backup(tmp_path, pg_migrated_url, "from-backup")
    await _store_with_runs(pg_database, "kept")
    _sql(pg_database, "CREATE TABLE public.theirs (x int); INSERT INTO public.theirs "
         "VALUES (7); CREATE TABLE tether.notes (y text); INSERT INTO tether.notes "
         "VALUES ('mine')")
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", pg_database)
    assert out.returncode == 2
    where = pg_database.split("@", 1)[1].split("/", 1)
    assert out.stderr == (
        f"tether: error: the store (schema tether at {where[0]}/{where[1]}) holds 1 run: "
        "a restore would replace what it holds; restore into a new database or schema, "
        "or give --force to replace it (Tether's tables only)\n")
    assert sorted(await _runs(pg_database)) == ["kept"]
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", pg_database, "--force")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"restored 1 run (0 waiting) from {backup} into "
                                 f"{pg_database}, replacing 1 run\n")
    assert sorted(await _runs(pg_database)) == ["from-backup"]
    assert _sql(pg_database, "SELECT x FROM public.theirs") == [(7,)]
    assert _sql(pg_database, "SELECT y FROM tether.notes") == [("mine",)]
    # A view of another schema on Tether's tables: the restore fails, changing nothing.
    # (A dump whose script is larger than a pipe holds: psql stops reading at the
    # error, and pg_restore, blocked writing the rest, is ended.)
    app = App(pg_migrated_url)
    try:
        await app.start("mid_step", os.urandom(600_000).hex(), run_id="large")
    finally:
        await app.close()
    large = tmp_path / "large.dump"
    out = _tether(tmp_path, "db", "backup", str(large), "--db", pg_migrated_url)
    assert out.returncode == 0, out.stderr
    assert large.stat().st_size > 500_000  # (its script: over 1.2 MB)
    _sql(pg_database, "CREATE VIEW public.counted AS SELECT count(*) FROM tether.runs")
    out = _tether(tmp_path, "db", "restore", str(large), "--db", pg_database, "--force")
    assert out.returncode == 1
    assert "(view counted depends on table tether.runs)" in out.stderr
    assert "nothing was changed" in out.stderr
    assert sorted(await _runs(pg_database)) == ["from-backup"]
    assert _sql(pg_database, "SELECT * FROM public.counted") == [(1,)]


@pytest.mark.postgres
@needs_pg_tools
async def test_postgres_a_refusal_names_every_worker_that_uses_the_store(
        tmp_path: Path, pg_migrated_url: str, pg_database: str) -> None:
    backup = await _pg_backup(tmp_path, pg_migrated_url, "from-backup")
    await _store_with_runs(pg_database, "kept")
    await _refusal_with_two_workers(pg_database, tmp_path, backup)
    assert sorted(await _runs(pg_database)) == ["kept"]


@pytest.mark.postgres
@needs_pg_tools
async def test_postgres_a_store_a_worker_uses_is_never_restored_into(
        tmp_path: Path, pg_migrated_url: str, pg_database: str) -> None:
    backup = await _pg_backup(tmp_path, pg_migrated_url, "from-backup")
    await _store_with_runs(pg_database, "kept")
    worker = _worker(pg_database, tmp_path, "worker")
    try:
        async def registered() -> bool:
            return bool(await _workers(pg_database))

        await _until("the worker registers", registered, worker)
        (info,) = await _workers(pg_database)
        out = _tether(tmp_path, "db", "restore", str(backup), "--db", pg_database, "--force")
        assert out.returncode == 2
        assert f"is in use by worker {info.worker_id} (pid {worker.pid} on " in out.stderr
        assert f"stop it (kill -TERM {worker.pid}" in out.stderr
    finally:
        stop_process(worker, 60)
    assert sorted(await _runs(pg_database)) == ["kept"]
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", pg_database, "--force")
    assert out.returncode == 0, out.stderr
    assert sorted(await _runs(pg_database)) == ["from-backup"]


@pytest.mark.postgres
@needs_pg_tools
async def test_postgres_a_newer_schema_or_a_foreign_dump_is_refused(
        tmp_path: Path, pg_migrated_url: str, pg_database: str) -> None:
    await _store_with_runs(pg_migrated_url, "r")
    top = _sql(pg_migrated_url, "SELECT max(version) FROM tether.schema_version")[0][0]
    _sql(pg_migrated_url, "INSERT INTO tether.schema_version VALUES (9999, 'future', 0)")
    newer = tmp_path / "newer.dump"
    subprocess.run(["pg_dump", "-Fc", "-n", "tether", "-f", str(newer), pg_migrated_url],
                   check=True, timeout=120)
    out = _tether(tmp_path, "db", "restore", str(newer), "--db", pg_database)
    assert (out.returncode, out.stderr) == (2, (
        f"tether: error: the backup {newer} has schema version 9999, newer than this "
        f"Tether knows (up to {top:04d}): restore it with the Tether version that wrote "
        "it, or upgrade tether\n"))
    foreign = tmp_path / "foreign.dump"
    _sql(pg_database, "CREATE TABLE public.invoices (id int)")
    subprocess.run(["pg_dump", "-Fc", "-f", str(foreign), pg_database], check=True,
                   timeout=120)
    out = _tether(tmp_path, "db", "restore", str(foreign), "--db", pg_database)
    assert (out.returncode, out.stderr) == (2, (
        f"tether: error: {foreign} is a PostgreSQL dump but not a Tether backup (it has no "
        "Tether tables: schema_version, runs)\n"))
    plain = tmp_path / "plain.sql"
    subprocess.run(["pg_dump", "-f", str(plain), pg_database], check=True, timeout=120)
    out = _tether(tmp_path, "db", "restore", str(plain), "--db", pg_database)
    assert out.returncode == 2
    assert f"{plain} is a plain-SQL pg_dump, not the custom format" in out.stderr
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(foreign.read_bytes()[:200])
    out = _tether(tmp_path, "db", "restore", str(truncated), "--db", pg_database)
    assert out.returncode == 2
    assert f"{truncated} is damaged or not a pg_dump archive: pg_restore" in out.stderr
    sqlite_file = await _backup_of(tmp_path, "x")
    out = _tether(tmp_path, "db", "restore", str(sqlite_file), "--db", pg_database)
    assert out.returncode == 2
    assert "is a SQLite database, not a PostgreSQL dump" in out.stderr
    # (the operator moving to PostgreSQL is told where the way is)
    assert ('a backup does not move runs between SQLite and PostgreSQL: `tether db copy '
            '--db FROM_URL --to TO_URL` does, from the store itself (docs/operations.md, '
            '"Moving from SQLite to PostgreSQL")') in out.stderr
    assert _sql(pg_database, "SELECT to_regnamespace('tether')") == [(None,)]


@pytest.mark.postgres
def test_postgres_restore_without_pg_restore_names_the_package(
        tmp_path: Path, pg_database: str) -> None:
    dump = tmp_path / "x.dump"
    dump.write_bytes(b"PGDMP" + bytes(100))
    env = dict(_env(tmp_path), PATH=str(tmp_path / "empty"))  # (no pg_restore there)
    out = _tether(tmp_path, "db", "restore", str(dump), "--db", pg_database, env=env)
    assert (out.returncode, out.stderr) == (1, (
        "tether: error: pg_restore and psql are not on the PATH: install PostgreSQL's "
        "client programs (Debian and Ubuntu: apt-get install postgresql-client, of the "
        "server's major version or newer)\n"))


async def test_sqlite_restore_over_a_store_left_with_its_wal_file(tmp_path: Path) -> None:
    """A store whose process died leaves what it committed in ``-wal`` (no checkpoint
    at close): a restore over it must not let that file be applied to the restored
    store, as it would be to a backup copied into place beside it. (Here the restore's
    own reading of the target, through SQLite, already checkpoints that file away
    before the copy: a raw copy at that point passed this test too.)"""
    backup = await _backup_of(tmp_path, "from-backup")
    path = tmp_path / "target.db"
    code = (
        "import asyncio, os\n"
        "from tether import App\n"
        "async def main():\n"
        f"    app = App('sqlite:///{path}')\n"
        "    for i in range(50):\n"
        "        await app.start('waits', run_id=f'left-{i}')\n"
        "    os._exit(0)  # (no close: the -wal keeps what was committed)\n"
        "asyncio.run(main())\n")
    died = forked.run([sys.executable, "-c", code], cwd=ROOT, env=_env(tmp_path), timeout=60)
    assert died.returncode == 0
    assert os.path.getsize(f"{path}-wal") > 0
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", f"sqlite:///{path}",
                  "--force")
    assert out.returncode == 0, out.stderr
    assert ", replacing 50 runs\n" in out.stdout
    assert sorted(await _runs(f"sqlite:///{path}")) == ["from-backup"]
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


@pytest.mark.postgres
@needs_pg_tools
async def test_postgres_a_store_tether_serve_uses_is_never_restored_into(
        tmp_path: Path, pg_migrated_url: str, pg_database: str) -> None:
    backup = await _pg_backup(tmp_path, pg_migrated_url, "from-backup")
    out = _tether(tmp_path, "db", "migrate", "--db", pg_database)
    assert out.returncode == 0, out.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(tmp_path / "serve.log", "wb") as log:
        server = forked.Popen(
            [sys.executable, "-m", "tether", "serve", "--db", pg_database, "--port", str(port)],
            cwd=ROOT, env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        async def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        await _until("tether serve answers /healthz", healthy, server)
        out = _tether(tmp_path, "db", "restore", str(backup), "--db", pg_database)
        assert out.returncode == 2
        assert (f"is in use by tether serve (pid {server.pid} on {socket.gethostname()}, "
                "PostgreSQL session ") in out.stderr, out.stderr
        assert f"stop it (kill -TERM {server.pid}), then run the restore again" in out.stderr
    finally:
        stop_process(server, 60)
    assert await _runs(pg_database) == {}
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", pg_database)
    assert out.returncode == 0, out.stderr
    assert sorted(await _runs(pg_database)) == ["from-backup"]


@pytest.mark.postgres
@needs_pg_tools
async def test_postgres_a_backup_of_an_older_schema_is_migrated(
        tmp_path: Path, pg_migrated_url: str, pg_database: str) -> None:
    await _store_with_runs(pg_migrated_url, "r")
    top = _sql(pg_migrated_url, "SELECT max(version), (SELECT name FROM "
               "tether.schema_version ORDER BY version DESC LIMIT 1) "
               "FROM tether.schema_version")[0]
    number, name, undo = _newest_migration("postgres", "tether.")
    assert top == (number, name[5:])  # (undone below: drop its index or column)
    _sql(pg_migrated_url, f"{undo}; DELETE FROM tether.schema_version WHERE version = {number}")
    older = tmp_path / "older.dump"
    subprocess.run(["pg_dump", "-Fc", "-n", "tether", "-f", str(older), pg_migrated_url],
                   check=True, timeout=120)
    out = _tether(tmp_path, "db", "restore", str(older), "--db", pg_database, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["backup_schema_version"], result["schema_version"]) == (number - 1, number)
    assert (result["migrated"], result["pending"], result["runs"]) == ([name], [], 1)
    status = _tether(tmp_path, "db", "status", "--check", "--db", pg_database)
    assert status.returncode == 0, status.stdout


@pytest.mark.postgres
@needs_pg_tools
async def test_postgres_a_restore_that_fails_partway_changes_nothing(
        tmp_path: Path, pg_migrated_url: str, pg_database: str) -> None:
    """The dump grants a role the target's cluster no longer has: pg_restore's GRANT,
    near the end of the script, fails after Tether's tables were dropped and created
    again; the one transaction leaves the store as it was."""
    role = f"{DB_PREFIX}reader_{uuid.uuid4().hex[:8]}"
    _sql(pg_migrated_url, f'CREATE ROLE "{role}"; GRANT SELECT ON tether.runs TO "{role}"')
    try:
        backup = await _pg_backup(tmp_path, pg_migrated_url, "from-backup")
    finally:
        _sql(pg_migrated_url, f'REVOKE ALL ON tether.runs FROM "{role}"; DROP ROLE "{role}"')
    await _store_with_runs(pg_database, "kept")
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", pg_database, "--force")
    assert out.returncode == 1
    assert out.stderr == (f'tether: error: the restore failed (psql exit 3): role "{role}" '
                          "does not exist; nothing was changed\n")
    assert sorted(await _runs(pg_database)) == ["kept"]


# -- A worker that starts during a restore --------------------------------------------------
#
# The restore checks the target, then (SQLite) takes the file's exclusive lock, or
# (PostgreSQL) its transaction takes the locks every Tether process needs, checks again
# under them, and copies. Two fault points, fired by the restore in this process:
# ``restore.checked`` (after the first check, before the locks) and ``restore.locked``
# (the locks held and the second check passed, before the copy). A worker started at
# the first is seen by the second check: refused, nothing changed. One started at the
# second waits for the locks, and then starts on the restored store, having claimed
# nothing of the old one.


def _wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    """``_until`` for a fault point's action (in the restore's thread, or its loop)."""
    for _ in range(1200):  # (60 s)
        if check():
            return
        assert proc.poll() is None, f"the process ended: {what}"
        time.sleep(0.05)
    raise AssertionError(f"never true: {what}")


def _executed(tmp: Path, pid: int) -> list[str]:
    """The step keys the process ``pid`` executed (``run:position``, `` begun`` kept)."""
    side = tmp / "side.txt"
    lines = side.read_text().splitlines() if side.exists() else []
    return [line.split(" ", 1)[1] for line in lines if line.startswith(f"{pid} ")]


async def _target_with_an_old_run(tmp: Path, target: str) -> None:
    app = App(target)
    try:
        await app.start("mid_step", str(tmp / "gate"), run_id="old")
    finally:
        await app.close()


async def _restore_with(target: str, backup: Path, point: str,
                        action: Callable[[], None]) -> Any:
    """``store.restore(backup, force=True)`` in this process, ``action`` armed at
    ``point`` (it must fire)."""
    fired: list[bool] = []

    def act() -> None:
        fired.append(True)
        action()

    store: Any = open_store(target)
    _faults.arm(point, act)
    try:
        return await store.restore(str(backup), force=True)
    finally:
        _faults.disarm_all()
        assert fired, f"the restore never reached {point}"


async def _refused_while_a_worker_starts(tmp: Path, target: str, backup: Path) -> None:
    """A worker started at ``restore.checked``, in the old run's second step when the
    restore goes on: refused, naming it; the store unchanged, the worker finishes the
    old run in it."""
    await _target_with_an_old_run(tmp, target)
    late: list[subprocess.Popen[bytes]] = []

    def start_a_worker() -> None:
        late.append(_worker(target, tmp, "late"))
        _wait_for("the late worker is in the old run's second step",
                  lambda: "old:1 begun" in _executed(tmp, late[0].pid), late[0])

    try:
        with pytest.raises(RestoreRefused) as refused:
            await _restore_with(target, backup, "restore.checked", start_a_worker)
        (worker,) = late
        assert " is in use by worker " in str(refused.value), refused.value
        assert f"(pid {worker.pid} on {socket.gethostname()}, " in str(refused.value)
        assert sorted(await _runs(target)) == ["old"]
        (tmp / "gate").touch()
        app = App(target)
        try:
            assert await asyncio.wait_for(app.handle("old").result(), 60) == "through"
        finally:
            await app.close()
        assert worker.poll() is None
    finally:
        for proc in late:
            stop_process(proc, 60)
    assert _executed(tmp, worker.pid) == ["old:0", "old:1 begun"]


async def _waits_for_the_restore(tmp: Path, target: str, backup: Path,
                                 start: Callable[[], subprocess.Popen[bytes]],
                                 waiting: Callable[[subprocess.Popen[bytes]], bool]) -> None:
    """A worker started (``start``) at ``restore.locked``, the restore going on once it
    waits for the store's locks (``waiting``): it starts after the restore, on the
    restored store, and never runs the old store's run."""
    await _target_with_an_old_run(tmp, target)
    late: list[subprocess.Popen[bytes]] = []

    def start_a_worker() -> None:
        late.append(start())
        # (or, where nothing makes it wait, until it ran the old run: the test fails)
        _wait_for("the late worker waits for the restore's locks",
                  lambda: waiting(late[0]) or "old:0" in _executed(tmp, late[0].pid),
                  late[0])

    try:
        done = await _restore_with(target, backup, "restore.locked", start_a_worker)
        (worker,) = late
        assert (done.runs, done.replaced_runs) == (1, 1)

        async def ran_the_restored_run() -> bool:
            return "from-backup:0" in _executed(tmp, worker.pid)

        await _until("the late worker runs the restored store's run", ran_the_restored_run,
                     worker)
        assert sorted(await _runs(target)) == ["from-backup"]
        assert worker.pid in [w.pid for w in await _workers(target)]
    finally:
        for proc in late:
            stop_process(proc, 60)
    assert _executed(tmp, worker.pid) == ["from-backup:0"]


#: A worker of the backup app whose SQLite store waits 0.2 s for a lock (30 s by default)
#: before its start fails, is logged ("stayed locked") and tried again: its wait shows.
_IMPATIENT_WORKER = (
    "import asyncio, sys\n"
    "from tests.cli.backup_app import app\n"
    "from tether.store import open_store\n"
    "app.use_store(sys.argv[1])\n"
    "app._store = open_store(sys.argv[1], busy_timeout=0.2)\n"
    "async def main() -> None:\n"
    "    async with app.worker():\n"
    "        await asyncio.Event().wait()\n"
    "asyncio.run(main())\n")


async def test_sqlite_a_worker_started_during_a_restore_is_seen_and_refuses_it(
        tmp_path: Path) -> None:
    backup = await _backup_of(tmp_path, "from-backup")
    await _refused_while_a_worker_starts(tmp_path, f"sqlite:///{tmp_path / 'target.db'}",
                                         backup)


async def test_sqlite_a_worker_starting_during_the_copy_waits_for_it(tmp_path: Path) -> None:
    backup = await _backup_of(tmp_path, "from-backup")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    log = tmp_path / "late.log"

    def start() -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            return forked.Popen([sys.executable, "-c", _IMPATIENT_WORKER, target], cwd=ROOT,
                                env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)

    await _waits_for_the_restore(tmp_path, target, backup, start,
                                 lambda _: "stayed locked" in log.read_text())
    assert f"SQLite store {str(tmp_path / 'target.db')!r} stayed locked for 0.2 s " \
        "while opening; retrying" in log.read_text()


@pytest.mark.postgres
@needs_pg_tools
async def test_postgres_a_worker_started_during_a_restore_is_seen_and_refuses_it(
        tmp_path: Path, pg_migrated_url: str, pg_database: str) -> None:
    backup = await _pg_backup(tmp_path, pg_migrated_url, "from-backup")
    await _refused_while_a_worker_starts(tmp_path, pg_database, backup)


@pytest.mark.postgres
@needs_pg_tools
async def test_postgres_a_worker_starting_during_the_copy_waits_for_it(
        tmp_path: Path, pg_migrated_url: str, pg_database: str) -> None:
    backup = await _pg_backup(tmp_path, pg_migrated_url, "from-backup")

    def blocked(worker: subprocess.Popen[bytes]) -> bool:
        """A session of the database waits for a lock (the worker's: nothing else
        connects to it)."""
        return bool(_sql(pg_database, "SELECT count(*) FROM pg_locks l JOIN "
                         "pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted AND "
                         "a.datname = current_database()")[0][0])

    await _waits_for_the_restore(tmp_path, pg_database, backup,
                                 lambda: _worker(pg_database, tmp_path, "late"), blocked)


@pytest.mark.postgres
@needs_pg_tools
@pytest.mark.parametrize("kind", ["serve", "mcp"])
async def test_postgres_a_store_tether_serve_or_mcp_uses_is_named_where_other_schemas_are(
        tmp_path: Path, pg_migrated_url: str, pg_database: str, kind: str) -> None:
    """A database with another Tether schema: the idle sessions of ``tether serve`` or
    ``tether mcp --no-worker`` on the target named no schema (``tether mcp`` went
    unseen). Their presence session names them; once they stop the restore is made."""
    backup = await _pg_backup(tmp_path, pg_migrated_url, "from-backup")
    for url in (f"{pg_database}?schema=other", pg_database):
        assert _tether(tmp_path, "db", "migrate", "--db", url).returncode == 0
    proc, port = _long_lived(kind, pg_database, tmp_path)
    try:
        await _opened(kind, proc, port, pg_database)
        out = _tether(tmp_path, "db", "restore", str(backup), "--db", pg_database)
        assert out.returncode == 2, out.stderr
        assert (f"is in use by tether {kind} (pid {proc.pid} on {socket.gethostname()}, "
                "PostgreSQL session ") in out.stderr, out.stderr
        assert f"stop it (kill -TERM {proc.pid}), then run the restore again" in out.stderr
    finally:
        _stop(proc)
    assert await _runs(pg_database) == {}
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", pg_database)
    assert out.returncode == 0, out.stderr
    assert sorted(await _runs(pg_database)) == ["from-backup"]


@pytest.mark.parametrize("kind", ["serve", "mcp"])
async def test_sqlite_a_refusal_names_the_tether_serve_or_mcp_that_has_the_store_open(
        tmp_path: Path, kind: str) -> None:
    backup = await _backup_of(tmp_path, "from-backup")
    path = tmp_path / "target.db"
    target = f"sqlite:///{path}"
    assert _tether(tmp_path, "db", "migrate", "--db", target).returncode == 0
    proc, port = _long_lived(kind, target, tmp_path)
    try:
        await _opened(kind, proc, port, target)
        out = _tether(tmp_path, "db", "restore", str(backup), "--db", target)
        assert out.returncode == 2, out.stderr
        assert out.stderr == (
            f"tether: error: {path} is in use by tether {kind} (pid {proc.pid} on "
            f"{socket.gethostname()}): stop it (kill -TERM {proc.pid}), then run the "
            "restore again\n")
    finally:
        _stop(proc)
    out = _tether(tmp_path, "db", "restore", str(backup), "--db", target)
    assert out.returncode == 0, out.stderr
    assert sorted(await _runs(target)) == ["from-backup"]
