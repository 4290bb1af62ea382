"""The SQLite store's file as an operator meets it (issue 12 items 2, 3, 4, 6, 9): a
new store is private and set up even while another process holds the file's lock; a
reading command changes no file; no command turns a file that is not a Tether store into
one; a newer or older schema, a corrupt page or a non-database file is a one-line error.
Commands run as a user runs them, in subprocesses."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from tests import forked
from tests.cli.test_cli import assert_one_line_error
from tests.store.test_db_cli import make_release_one_store
from tether.errors import ConfigError, StoreError
from tether.store import open_store

from .conftest import cancel_close, run_record

ROOT = Path(__file__).resolve().parents[2]
READING = (("runs",), ("show", "r1"), ("result", "r1"), ("approvals",), ("queues",),
           ("db", "status"))
WRITING = (("start", "wf"), ("signal", "r1", "go"), ("cancel", "r1"), ("db", "migrate"),
           ("queue-limit", "q", "2"))


def tether(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    full.update(env, PYTHONPATH=str(ROOT))
    return forked.run([sys.executable, "-m", "tether", *args], cwd=cwd, env=full,
                      capture_output=True, text=True, timeout=60)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` and a hash of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def foreign_db(path: Path) -> None:
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE people (name TEXT); INSERT INTO people VALUES ('ada')")
    conn.close()


async def make_store(path: Path) -> None:
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        await store.run_insert(run=run_record("r1"))
    finally:
        await store.close()


@pytest.mark.parametrize("command", READING + WRITING, ids=" ".join)
def test_no_command_turns_a_foreign_sqlite_file_into_a_store(
    tmp_path: Path, command: tuple[str, ...],
) -> None:
    db = tmp_path / "theirs.db"
    foreign_db(db)
    before = snapshot(tmp_path)
    done = tether(*command, "--db", f"sqlite:///{db}")
    assert_one_line_error(done, "not a Tether store", "unchanged")
    assert snapshot(tmp_path) == before  # same bytes, no -wal or -shm left behind
    assert apsw.Connection(str(db)).execute("PRAGMA journal_mode").fetchall()[0][0] == "delete"


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_reading_commands_create_no_store(tmp_path: Path, command: tuple[str, ...]) -> None:
    done = tether(*command, "--db", f"sqlite:///{tmp_path}/none.db")
    if command == ("db", "status"):
        assert done.returncode == 0  # everything pending
    else:
        assert_one_line_error(done, "no Tether store")
    assert list(tmp_path.iterdir()) == []


async def test_reading_commands_do_not_change_an_existing_store(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    await make_store(db)
    before = snapshot(tmp_path)
    assert set(before) == {"t.db"}  # the WAL was checkpointed and removed at close
    for command in READING:
        done = tether(*command, "--db", f"sqlite:///{db}")
        assert "Traceback" not in done.stderr, done.stderr
    assert snapshot(tmp_path) == before


def test_a_file_that_is_not_a_database_is_a_one_line_error(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are my notes, not a database\n" * 200)
    before = snapshot(tmp_path)
    for command in (("runs",), ("start", "wf"), ("db", "migrate")):
        assert_one_line_error(tether(*command, "--db", f"sqlite:///{db}"), "not a database")
    assert snapshot(tmp_path) == before


async def test_a_store_written_by_a_newer_tether_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    await make_store(db)
    conn = apsw.Connection(str(db))
    conn.execute("INSERT INTO tether_schema_version VALUES (9999, 'from_the_future', 0)")
    conn.close()
    before = snapshot(tmp_path)
    for command in (("runs",), ("show", "r1"), ("start", "wf"), ("db", "migrate"),
                    ("db", "status")):
        assert_one_line_error(tether(*command, "--db", f"sqlite:///{db}"),
                              "newer Tether", "9999")
    assert snapshot(tmp_path) == before
    with pytest.raises(ConfigError, match="newer Tether"):
        await open_store(f"sqlite:///{db}").open()  # a worker refuses it too


#: The migrations the previous landed version (657b9d4) knows: it refuses a store whose
#: tether_schema_version holds any other ("written by a newer Tether"), and its code
#: cannot change. Released code's rule, quoted: the check must hold for it.
PREVIOUS_VERSION_KNOWS = {1, 2, 3, 4, 5, 10, 11, 12, 13}


def versions(db: Path, table: str) -> set[int]:
    conn = apsw.Connection(str(db))
    try:
        return {r[0] for r in conn.execute(f"SELECT version FROM {table}")}
    finally:
        conn.close()


async def test_a_store_this_code_migrated_stays_open_to_the_previous_version(
    tmp_path: Path,
) -> None:
    """A rolling update: the new code migrates the store while workers and CLIs of the
    previous version still use it. Migration 0014 (an index the previous code never
    reads) is compatible: recorded apart, so the previous version does not refuse the
    store (the upgrade check, python -m tests.upgrade, runs the real previous code)."""
    db = tmp_path / "t.db"
    await make_store(db)
    assert versions(db, "tether_schema_version") <= PREVIOUS_VERSION_KNOWS
    assert {14, 19} <= versions(db, "tether_schema_compatible")
    status = tether("db", "status", "--db", f"sqlite:///{db}")
    assert status.returncode == 0 and "pending" not in status.stdout, status.stdout
    conn = apsw.Connection(str(db))
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = "
                        "'tether_runs_forked_from'").fetchall() == [(1,)]
    conn.close()


async def test_a_compatible_migration_this_code_does_not_know_is_not_refused(
    tmp_path: Path,
) -> None:
    """The next version's compatible migration (one it records apart) leaves this
    version using the store: its CLI reads and writes, a worker opens it."""
    db = tmp_path / "t.db"
    await make_store(db)
    conn = apsw.Connection(str(db))
    conn.execute("CREATE INDEX future ON tether_runs (updated_at)")
    conn.execute("INSERT INTO tether_schema_compatible VALUES (9999, 'future_index', 0)")
    conn.close()
    for command in (("runs",), ("show", "r1"), ("db", "status"), ("db", "migrate"),
                    ("cancel", "r1")):
        done = tether(*command, "--db", f"sqlite:///{db}")
        assert done.returncode == 0, (command, done.stderr)
    store = open_store(f"sqlite:///{db}")
    await store.open()
    await store.close()


async def test_a_store_with_0014_recorded_as_required_opens_as_current(
    tmp_path: Path,
) -> None:
    """A store migrated by the code of 40e0fc6 to this change recorded 0014 in
    tether_schema_version: still current, and nothing is applied twice."""
    db = tmp_path / "t.db"
    await make_store(db)
    conn = apsw.Connection(str(db))
    conn.execute("INSERT INTO tether_schema_version SELECT * FROM tether_schema_compatible; "
                 "DELETE FROM tether_schema_compatible")
    conn.close()
    migrated = tether("db", "migrate", "--db", f"sqlite:///{db}")
    assert migrated.returncode == 0, migrated.stderr
    assert "0014" not in migrated.stdout
    done = tether("runs", "--db", f"sqlite:///{db}")
    assert done.returncode == 0 and "r1" in done.stdout, done.stderr


async def test_an_older_schema_is_named_by_commands_and_migrated_by_db_migrate(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    url = f"sqlite:///{db}"
    make_release_one_store(url)
    for command in (("runs",), ("start", "wf"), ("signal", "old", "go")):
        assert_one_line_error(tether(*command, "--db", url), "older schema", "db migrate")
    migrated = tether("db", "migrate", "--db", url)
    assert migrated.returncode == 0, migrated.stderr
    done = tether("runs", "--db", url)
    assert done.returncode == 0 and "old" in done.stdout, done.stderr


async def test_a_corrupt_page_is_a_one_line_error(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        for i in range(300):  # several pages of runs
            await store.run_insert(run=run_record(f"run-{i:04d}"))
    finally:
        await store.close()
    size = db.stat().st_size
    with open(db, "r+b") as f:  # garble every page but the first (the header)
        for offset in range(4096, size, 4096):
            f.seek(offset + 16)
            f.write(os.urandom(512))
    for command in (("runs",), ("show", "run-0007"), ("start", "wf")):
        done = tether(*command, "--db", f"sqlite:///{db}")
        assert_one_line_error(done, str(db))
        assert "corrupt" in done.stderr or "malformed" in done.stderr, done.stderr
    with pytest.raises(StoreError):
        store = open_store(f"sqlite:///{db}")
        await store.open()
        try:
            await store.run_list(limit=1000)
        finally:
            await store.close()


async def test_new_store_files_are_created_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    old = os.umask(0o022)
    try:
        store = open_store(f"sqlite:///{db}")
        await store.open()
        try:
            await store.run_insert(run=run_record("r1"))
            files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
        finally:
            await store.close()
    finally:
        os.umask(old)
    assert modes == {"t.db": 0o600, "t.db-wal": 0o600, "t.db-shm": 0o600}
    cli_db = tmp_path / "cli.db"
    assert tether("queue-limit", "q", "2", "--db", f"sqlite:///{cli_db}").returncode == 0
    assert stat.S_IMODE(cli_db.stat().st_mode) == 0o600


_HOLD_LOCK = """
import apsw, sys, time
conn = apsw.Connection(sys.argv[1])
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.mark.slow
async def test_opening_a_new_store_waits_for_another_process_holding_its_lock(
    tmp_path: Path,
) -> None:
    """Issue 12 item 2: the switch to WAL used to fail at once with 'database is
    locked' while another process (a worker creating the store) held the file."""
    db = tmp_path / "t.db"
    db.touch(mode=0o600)
    with forked.Popen([sys.executable, "-c", _HOLD_LOCK, str(db), "1.5"],
                      stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        done = await asyncio.to_thread(tether, "queue-limit", "q1", "3", "--db",
                                       f"sqlite:///{db}")
        assert done.returncode == 0, done.stderr
        assert holder.poll() is not None  # it waited for the lock rather than failed
    listed = tether("queues", "--db", f"sqlite:///{db}")
    assert listed.returncode == 0 and "q1" in listed.stdout


@pytest.mark.slow
def test_many_processes_creating_one_store_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    argv = [sys.executable, "-m", "tether"]
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    commands = [["queue-limit", f"q{i}", "1"] for i in range(4)] + [["db", "migrate"]]
    procs = [forked.Popen(argv + c + ["--db", url], env=env, cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for c in commands]
    results = [(p.returncode, p.communicate(timeout=60)[1]) for p in procs]
    results = [(p.returncode, err) for p, (_, err) in zip(procs, results, strict=True)]
    assert all(code == 0 for code, _ in results), results
    listed = tether("queues", "--db", url)
    assert all(f"q{i}" in listed.stdout for i in range(4))


def test_start_with_app_uses_the_apps_store(tmp_path: Path) -> None:
    """Issue 12 item 4: ``--app`` without ``--db`` writes where the app's workers look."""
    own = tmp_path / "own.db"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = tether("start", "hello", "--input", '["ada"]', "--id", "a1", "--app",
                  "tests.store.own_store_app:app", cwd=cwd, OWN_STORE_URL=f"sqlite:///{own}")
    assert done.returncode == 0, done.stderr
    assert list(cwd.iterdir()) == []  # no ./tether.db where no worker looks
    assert "a1" in tether("runs", "--db", f"sqlite:///{own}").stdout


async def test_an_sqlite_that_binds_too_few_values_is_refused_at_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An SQLite that binds fewer values per statement than a batch of 512 journal
    appends needs (999 before SQLite 3.32) is refused when the store opens, with what to
    install, instead of failing every batched write later; a reading store still opens."""
    from tether.store.sqlite import _store as sqlite_store

    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = open_store(url)
    await store.open()
    await store.close()
    opened = sqlite_store.SqliteStore._open_file

    def old_sqlite(self: sqlite_store.SqliteStore) -> apsw.Connection:
        conn = opened(self)
        conn.limit(apsw.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        return conn

    monkeypatch.setattr(sqlite_store.SqliteStore, "_open_file", old_sqlite)
    with pytest.raises(ConfigError) as err:
        await open_store(url).open()
    assert "binds at most 999 values per statement" in str(err.value)
    assert "6656" in str(err.value) and "3.32" in str(err.value)
    reader = open_store(url + "?mode=ro")
    await reader.open()
    assert await reader.run_get("nope") is None
    await reader.close()


async def test_a_cancelled_close_is_cancelled_at_once_and_the_closing_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A timeout around ``close`` cancels the caller at once; the writer thread still
    stops and the notifications still close, and a second ``close`` waits for that
    instead of returning with them open."""
    import threading

    from tether.store.sqlite import _store as sqlite_store

    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(store, sqlite_store.SqliteStore)
    await store.open()
    assert await store.run_get("nope") is None
    thread = store._thread
    assert thread is not None
    joined = thread.join
    gate = threading.Event()

    def held_up_join() -> None:
        gate.wait(30)
        joined()

    monkeypatch.setattr(thread, "join", held_up_join)
    closed: list[str] = []
    notifier_close = store._notifier.close
    monkeypatch.setattr(store._notifier, "close",
                        lambda: (closed.append("notifier"), notifier_close())[1])
    await cancel_close(store)
    assert closed == []  # still closing
    gate.set()
    await store.close()
    assert closed == ["notifier"] and not thread.is_alive()
    await store.close()
    assert closed == ["notifier"]


def _without_root_privileges() -> list[str]:
    """A prefix that makes a command meet file permissions as a user does (root passes
    them through CAP_DAC_OVERRIDE), or skips when that cannot be done here."""
    if os.geteuid() != 0:
        return []
    import shutil
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: permissions cannot be made to apply")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


@pytest.mark.parametrize("command", [("runs",), ("start", "w"), ("worker", "tests.cli.cli_app:app"),
                                     ("serve", "--port", "1")], ids=" ".join)
def test_a_store_on_a_read_only_mount_is_refused_saying_so(
    tmp_path: Path, command: tuple[str, ...],
) -> None:
    """A store on a file system mounted read-only (a snapshot, a volume mounted ``ro``):
    SQLite cannot create the ``-shm`` a WAL database needs even to be read, and says
    "unable to open database file". Every command said that alone, and took it for an
    outage: ``tether serve`` answered 503 and a worker retried, for ever. Now it is a
    store error saying why (one line, exit 1), as a folder that is not writable is."""
    from tests.chaos.diskfull import missing_privilege, small_tmpfs

    if missing_privilege():
        pytest.skip(missing_privilege())
    with small_tmpfs("8m") as mnt:
        asyncio.run(make_store(mnt / "s.db"))
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True,
                       capture_output=True)
        env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
        env["PYTHONPATH"] = os.pathsep.join((str(ROOT / "src"), str(ROOT)))
        done = subprocess.run([sys.executable, "-m", "tether", *command, "--db",
                               f"sqlite:///{mnt / 's.db'}"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert sorted(p.name for p in mnt.iterdir()) == ["s.db"]
    assert_one_line_error(done, "unable to open database file (it is on a read-only file "
                          "system", "mount it read-write, or copy the file")
    assert done.returncode == 1


@pytest.mark.parametrize("command", [("runs",), ("serve", "--port", "1")], ids=" ".join)
def test_a_store_in_a_read_only_folder_is_refused_naming_the_folder(
    tmp_path: Path, command: tuple[str, ...],
) -> None:
    """An operator's mistake: the store's folder made read-only (the file's own mode
    fine). SQLite cannot write the -wal beside it and says only "attempt to write a
    readonly database"; the error names the folder and what to do."""
    folder = tmp_path / "store"
    folder.mkdir()
    asyncio.run(make_store(folder / "s.db"))
    assert sorted(p.name for p in folder.iterdir()) == ["s.db"]
    prefix = _without_root_privileges()
    folder.chmod(0o555)
    try:
        env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
        env["PYTHONPATH"] = os.pathsep.join((str(ROOT / "src"), str(ROOT)))
        done = subprocess.run([*prefix, sys.executable, "-m", "tether", *command, "--db",
                               f"sqlite:///{folder / 's.db'}"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        folder.chmod(0o755)
    assert_one_line_error(done, f"its folder {folder} is not writable",
                          "make the folder writable")
    assert done.returncode == 1


async def test_every_open_of_a_store_in_a_missing_folder_fails(tmp_path: Path) -> None:
    """Opening a store whose folder does not exist fails with ConfigError every time,
    also the open right after a failed one. (Its thread forgot itself only after it had
    told the failure: an open in between returned as if the store were open, and the
    first operation then waited for ever; 29 of 300 second opens did so here, and
    `tether mcp`'s tasks/get hung in 1 of 19 stress runs of test_stdio.py.)"""
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'tether.db'}"
    for _ in range(300):
        store = open_store(url)
        for _ in range(2):
            with pytest.raises(ConfigError, match="no folder"):
                await store.open()


@pytest.mark.parametrize("query", ["read_only=true", "synchronus=normal", "busy_timeout=60",
                                   "mode=ro&foo"])
def test_an_option_a_sqlite_url_does_not_take_is_refused(tmp_path: Path, query: str) -> None:
    # As a PostgreSQL URL's: ``?read_only=true`` was ignored, and ``tether start`` wrote to
    # the store its user meant to only read; a misspelt option did the default silently.
    url = f"sqlite:///{tmp_path}/t.db?{query}"
    with pytest.raises(ConfigError, match="not known: a sqlite URL takes synchronous, "
                                          "migrate, mode"):
        open_store(url)
    done = tether("start", "wf", "--db", url)
    assert_one_line_error(done, "sqlite URL option", "not known")
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_the_options_a_sqlite_url_takes_are_accepted(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/t.db?synchronous=normal&migrate=false&mode=rw")
    assert store.synchronous == "NORMAL"  # type: ignore[attr-defined]
