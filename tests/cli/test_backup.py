"""``tether db backup PATH`` of a store in use, and its restore (docs/operations.md,
Backup and restore): a worker process runs work of every kind while the backup is
taken (runs mid-step, waiting for a signal, sleeping on a durable timer, writing step
after step); the copy, restored into a new SQLite file or a new PostgreSQL database,
is served by a new worker, which finishes every run without executing again any step
the backup had journaled, and a signal sent on the copy wakes the run that waits."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import forked
from tests.conftest import DB_PREFIX, _create_database, _database_url, _drop_database
from tether import App
from tether.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cli.backup_app:app"


def _env(side: Path) -> dict[str, str]:
    env = dict(
        os.environ,
        TETHER_TEST_SIDE_FILE=str(side),
        PYTHONPATH=os.pathsep.join((str(ROOT / "src"), str(ROOT))),
    )
    env.pop("TETHER_DATABASE_URL", None)
    return env


def _tether(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return forked.run(
        [sys.executable, "-m", "tether", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _worker(db: str, side: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return forked.Popen(
            [sys.executable, "-m", "tether", "worker", APP, "--db", db],
            cwd=ROOT,
            env=_env(side),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _executions(side: Path) -> list[str]:
    """The step keys executed, as ``run:position`` (`` begun`` kept for ``through``)."""
    if not side.exists():
        return []
    return [line.split(" ", 1)[1] for line in side.read_text().split("\n")[:-1]]


async def _until(check: object, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(1200):  # (60 s)
        if await check():  # type: ignore[operator]
            return
        assert proc.poll() is None, log.read_text()
        await asyncio.sleep(0.05)
    raise AssertionError(f"never true; worker log:\n{log.read_text()}")


async def _committed_steps(url: str, runs: list[str]) -> set[str]:
    """The step keys the store has journaled as done."""
    app = App(url)
    try:
        out = set()
        for rid in runs:
            for entry in (await app.get_run(rid)).journal:
                if entry["kind"] == "step" and entry["status"] == "ok":
                    out.add(f"{rid}:{entry['position']}")
        return out
    finally:
        await app.close()


@pytest.fixture
def fresh_pg_database() -> Iterator[str]:
    """An empty PostgreSQL database (no schema: a restore's target)."""
    name = f"{DB_PREFIX}restore_{uuid.uuid4().hex[:12]}"
    _create_database(name)
    try:
        yield _database_url(name)
    finally:
        _drop_database(name)


async def _backup_and_restore(tmp_path: Path, source: str, restore: object) -> None:
    gate = tmp_path / "gate"
    side_a, side_b = tmp_path / "side-a.txt", tmp_path / "side-b.txt"
    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    app = App(source)
    busy = [f"busy-{i}" for i in range(4)]
    mid = [f"mid-{i}" for i in range(3)]
    waiting = [f"wait-{i}" for i in range(3)]
    sleeping = [f"sleep-{i}" for i in range(3)]
    runs = busy + mid + waiting + sleeping
    try:
        for rid in busy:
            await app.start("busy", str(gate), run_id=rid)
        for rid in mid:
            await app.start("mid_step", str(gate), run_id=rid)
        for rid in waiting:
            await app.start("waits", run_id=rid)
        for rid in sleeping:
            await app.start("sleeps", 8.0, run_id=rid)  # (due after the backup)
        worker_a = _worker(source, side_a, log_a)
        try:

            async def all_in_flight() -> bool:
                done = _executions(side_a)
                if not all(f"{rid}:1 begun" in done for rid in mid):
                    return False
                for rid in waiting + sleeping:
                    if (await app.get_run(rid)).status != "waiting":
                        return False
                return all(sum(k.startswith(f"{rid}:") for k in done) >= 6 for rid in busy)

            await _until(all_in_flight, worker_a, log_a)
            backup = tmp_path / "store.backup"
            out = _tether("db", "backup", str(backup), "--db", source, env=_env(side_a))
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith(f"backed up {source} to {backup} (")
            assert backup.stat().st_mode & 0o777 == 0o600
            assert worker_a.poll() is None  # (the worker went on throughout)
        finally:
            worker_a.send_signal(signal.SIGKILL)  # (the store's machine is lost)
            worker_a.wait(30)
    finally:
        await app.close()
    restored = await restore(backup)  # type: ignore[operator]
    committed = await _committed_steps(restored, runs)
    # What the backup holds: each busy run part of the way, each other run at its wait.
    for rid in busy:  # (the worker went on past it: the rest runs on the copy)
        assert sum(key.startswith(f"{rid}:") for key in committed) >= 6, committed
    for rid in mid:
        assert f"{rid}:0" in committed and f"{rid}:1" not in committed, committed
    for rid in waiting + sleeping:
        assert f"{rid}:0" in committed and f"{rid}:2" not in committed, committed
    gate.touch()
    worker_b = _worker(restored, side_b, log_b)
    copy = App(restored)
    try:
        for rid in waiting:
            assert await copy.signal(rid, "go", {"to": rid}, idempotency_key=f"go-{rid}")
        results = {rid: await asyncio.wait_for(copy.handle(rid).result(), 120) for rid in runs}
    finally:
        await copy.close()
        worker_b.send_signal(signal.SIGTERM)
        assert worker_b.wait(60) == 0, log_b.read_text()
    for rid in busy:
        assert isinstance(results[rid], int) and results[rid] >= 1
    assert {results[rid] for rid in mid} == {"through"}
    assert [results[rid] for rid in waiting] == [{"to": rid} for rid in waiting]
    assert {results[rid] for rid in sleeping} == {"slept"}
    again = [key for key in _executions(side_b) if key in committed]
    assert again == [], f"steps journaled before the backup ran again: {again}"
    # The step in flight at the backup (``through``) runs again on the copy, once.
    assert sorted(k for k in _executions(side_b) if k.endswith(" begun")) == sorted(
        f"{rid}:1 begun" for rid in mid
    )


async def test_sqlite_backup_of_a_store_in_use_restores_to_a_working_store(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'tether.db'}"

    async def restore(backup: Path) -> str:
        # (a restore is a copy of the backup, a file no process writes)
        target = tmp_path / "restored" / "tether.db"
        target.parent.mkdir()
        shutil.copyfile(backup, target)
        return f"sqlite:///{target}"

    await _backup_and_restore(tmp_path, source, restore)


@pytest.mark.postgres
@pytest.mark.skipif(
    shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
    reason="PostgreSQL's client programs (pg_dump, pg_restore) are not here",
)
async def test_postgres_backup_of_a_store_in_use_restores_to_a_working_store(
    tmp_path: Path, pg_migrated_url: str, fresh_pg_database: str
) -> None:
    async def restore(backup: Path) -> str:
        out = subprocess.run(
            ["pg_restore", "--no-owner", "--dbname", fresh_pg_database, str(backup)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return fresh_pg_database

    await _backup_and_restore(tmp_path, pg_migrated_url, restore)


async def test_a_backup_is_never_written_over_a_file(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'tether.db'}"
    app = App(source)
    await app.start("waits", run_id="w")
    await app.close()
    backup = tmp_path / "old.backup"
    backup.write_text("an older backup")
    out = _tether("db", "backup", str(backup), "--db", source, env=_env(tmp_path / "s"))
    assert out.returncode == 1
    assert "exists already" in out.stderr
    assert backup.read_text() == "an older backup"
    assert sorted(os.listdir(tmp_path)) == ["old.backup", "tether.db"]
    store = App(source).store
    with pytest.raises(ConfigError, match="exists already"):
        await store.backup(str(backup))  # type: ignore[attr-defined]


def test_an_empty_db_is_bad_input_not_the_default_store(tmp_path: Path) -> None:
    """``--db ''`` (a script's unset variable: ``--db "$URL"``) was taken as no --db, so
    ``tether db restore BACKUP --db '' --force`` replaced ./tether.db (or
    $TETHER_DATABASE_URL's store): it is bad input (exit 2), after the command or
    before it, and the store is left as it was."""
    store = tmp_path / "tether.db"
    source = f"sqlite:///{tmp_path / 'src.db'}"
    _tether("start", "waits", "--id", "keep-me", "--db", f"sqlite:///{store}",
            env=_env(tmp_path / "s"))
    _tether("start", "waits", "--id", "other", "--db", source, env=_env(tmp_path / "s"))
    assert _tether("db", "backup", str(tmp_path / "b.db"), "--db", source,
                   env=_env(tmp_path / "s")).returncode == 0
    env = {**_env(tmp_path / "s"), "TETHER_DATABASE_URL": f"sqlite:///{store}"}
    for argv in (("db", "restore", str(tmp_path / "b.db"), "--db", "", "--force"),
                 ("--db", "", "db", "restore", str(tmp_path / "b.db"), "--force"),
                 ("runs", "--db", " ")):
        out = _tether(*argv, env=env)
        assert out.returncode == 2, (argv, out.stdout, out.stderr)
        assert "argument --db: empty: give a store URL" in out.stderr, out.stderr
    shown = _tether("show", "keep-me", env=env)
    assert shown.returncode == 0, shown.stderr  # not replaced by the backup's runs


def test_a_backup_path_that_is_empty_or_a_folder_is_bad_input(tmp_path: Path) -> None:
    """``tether db backup ''`` said " exists already" (of the current folder) and
    ``tether db backup /backups`` that the folder "exists already", exit 1, as if an
    older backup were there: both are bad input (exit 2) saying what to give."""
    source = f"sqlite:///{tmp_path / 'tether.db'}"
    (tmp_path / "backups").mkdir()
    empty = _tether("db", "backup", "", "--db", source, env=_env(tmp_path / "s"))
    assert empty.returncode == 2, empty.stderr
    assert "tether: error: the backup's PATH is empty: give the new file to write" \
        in empty.stderr
    folder = _tether("db", "backup", str(tmp_path / "backups"), "--db", source,
                     env=_env(tmp_path / "s"))
    assert folder.returncode == 2, folder.stderr
    assert (f"tether: error: {tmp_path / 'backups'} is a folder: give the path of the new "
            f"backup file to write in it ({tmp_path / 'backups' / 'tether-backup.db'}, "
            "say)") in folder.stderr
    assert os.listdir(tmp_path / "backups") == []


@pytest.mark.postgres
def test_a_postgres_backup_without_pg_dump_says_what_to_do(
    tmp_path: Path, pg_migrated_url: str
) -> None:
    env = dict(_env(tmp_path / "s"), PATH=str(tmp_path))  # (no pg_dump there)
    out = _tether("db", "backup", str(tmp_path / "x.dump"), "--db", pg_migrated_url, env=env)
    assert out.returncode == 1
    assert "pg_dump is not on the PATH: install PostgreSQL's client programs" in out.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.postgres
def test_a_postgres_backup_of_a_server_down_or_a_schema_without_a_store_says_so(
    tmp_path: Path, pg_migrated_url: str
) -> None:
    """An operator's backup against the wrong place: a server that is down is told as
    every command tells it (it was pg_dump's last line, "pg_dump failed (exit 1) on
    h:p/db: \\x09Is the server running on that host and accepting TCP/IP
    connections?"), and a schema that holds no store is named (it was "no matching
    schemas were found"). Nothing is written either way."""
    env = _env(tmp_path / "s")
    (tmp_path / "backups").mkdir()
    target = str(tmp_path / "backups" / "x.dump")
    out = _tether("db", "backup", target, "--db", "postgresql://postgres@127.0.0.1:1/db",
                  env=env)
    assert (out.returncode, out.stderr) == (1, (
        "tether: error: PostgreSQL at 127.0.0.1:1 is unavailable: Connection refused\n"))
    sep = "&" if "?" in pg_migrated_url else "?"
    out = _tether("db", "backup", target, "--db", f"{pg_migrated_url}{sep}schema=nosuch",
                  env=env)
    assert out.returncode == 1, out
    assert "tether: error: no Tether store in PostgreSQL schema 'nosuch' at " in out.stderr
    assert "nothing to back up" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert os.listdir(tmp_path / "backups") == []
