"""``tether db status`` / ``tether db migrate`` on both backends, run as a user runs
them (a subprocess), including the upgrade of a store made by the previous release
(migration 0001 only) that refuses to open while auto-migration is off."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests import forked
from tether.errors import ConfigError
from tether.store import open_store
from tether.store._sql import load_migrations

from .conftest import run_record

ROOT = Path(__file__).resolve().parents[2]


def tether(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    return forked.run([sys.executable, "-m", "tether", *args], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=60)


def make_release_one_store(url: str) -> None:
    """A store as the previous release left it: migration 0001 applied, one run."""
    if url.startswith("sqlite:"):
        import apsw

        conn = apsw.Connection(url.split("///", 1)[1])
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE tether_schema_version (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, applied_at REAL NOT NULL)")
        (_, _, sql), *_ = load_migrations("tether.store.sqlite")
        conn.execute(sql)
        conn.execute("INSERT INTO tether_schema_version VALUES (1, 'init', ?)", (time.time(),))
        conn.execute("INSERT INTO tether_runs (run_id, workflow, queue, status, input, "
                     "created_at, updated_at, available_at) VALUES "
                     "('old', 'wf', 'q', 'queued', '[[], {}]', 1, 1, 1)")
        conn.close()
        return
    import psycopg

    from tether.store.postgres._migrate import migrations

    (_, _, sql), *_ = migrations("tether")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA tether")
        conn.execute("CREATE TABLE tether.schema_version (version integer PRIMARY KEY, "
                     "name text NOT NULL, applied_at double precision NOT NULL)")
        conn.execute(sql)
        conn.execute("INSERT INTO tether.schema_version VALUES (1, 'init', 0)")
        conn.execute("INSERT INTO tether.runs (run_id, workflow, queue, status, input, "
                     "created_at, updated_at, available_at) VALUES "
                     "('old', 'wf', 'q', 'queued', '[[], {}]', 1, 1, 1)")


def status_lines(url: str) -> list[str]:
    done = tether("db", "status", "--db", url)
    assert done.returncode == 0, done.stderr
    return [" ".join(line.split()) for line in done.stdout.splitlines()]


@pytest.mark.slow
async def test_db_status_and_migrate_upgrade_a_previous_release(empty_store_url: str) -> None:
    """Status lists 0002 pending on a release-one store; a store with auto-migration
    off refuses to open it, naming the command; ``tether db migrate`` applies only 0002,
    keeps the data, and a second run has nothing to do."""
    store_url = empty_store_url
    make_release_one_store(store_url)
    package = "tether.store.sqlite" if store_url.startswith("sqlite:") else "tether.store.postgres"
    later = [f"{v:04d} {n}" for v, n, _ in load_migrations(package)[1:]]
    assert status_lines(store_url) == ["0001 init applied", *(f"{m} pending" for m in later)]
    strict = open_store(store_url, migrate=False)
    with pytest.raises(ConfigError, match=r"0002_shared_state.*tether db migrate"):
        await strict.open()
    first = tether("db", "migrate", "--db", store_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [w for m in later for w in ("applied", m.replace(" ", "_"))]
    again = tether("db", "migrate", "--db", store_url)
    assert again.returncode == 0 and again.stdout.strip() == "up to date"
    assert status_lines(store_url) == ["0001 init applied", *(f"{m} applied" for m in later)]
    await strict.open()
    try:
        old = await strict.run_get("old")
        assert old is not None and old.metrics == {}
        await strict.run_insert(run=run_record("new"))
    finally:
        await strict.close()


def test_db_status_json_and_check(tmp_path: Path) -> None:
    """``--json`` gives the migrations and how many are pending; ``--check`` exits 1
    while any is pending and 0 once ``tether db migrate`` applied them (a deploy's
    check); plain ``db status`` exits 0 either way, as before."""
    url = f"sqlite:///{tmp_path}/s.db"
    known = load_migrations("tether.store.sqlite")
    before = tether("db", "status", "--json", "--check", "--db", url)
    assert before.returncode == 1, before.stderr
    doc = json.loads(before.stdout)
    assert doc == {"pending": len(known), "migrations": [
        {"version": v, "name": n, "applied": False} for v, n, _ in known]}
    assert tether("db", "status", "--db", url).returncode == 0
    assert tether("db", "migrate", "--db", url).returncode == 0
    after = tether("db", "status", "--json", "--check", "--db", url)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["pending"] == 0
    assert all(m["applied"] for m in json.loads(after.stdout)["migrations"])


def test_db_status_of_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    """Status of a file that does not exist lists everything pending and leaves no file;
    ``?migrate=false`` in the URL is understood, and a bad value is refused."""
    url = f"sqlite:///{tmp_path}/none.db"
    assert status_lines(url) == [f"{v:04d} {n} pending"
                                 for v, n, _ in load_migrations("tether.store.sqlite")]
    assert not (tmp_path / "none.db").exists()
    # Said so on stderr, with the file's absolute path (every line "pending" read as a
    # store to migrate: a path mistyped, or sqlite:///x.db taken for ./x.db, went unseen).
    said = tether("db", "status", "--db", "sqlite:///./none.db", cwd=tmp_path)
    assert said.returncode == 0, said.stderr
    assert said.stderr == (f"no Tether store at {tmp_path}/none.db yet: `tether db "
                           "migrate` (or a worker's start) creates it there\n"), said.stderr
    assert not (tmp_path / "none.db").exists()
    assert tether("db", "migrate", "--db", url).returncode == 0
    assert tether("db", "status", "--db", url).stderr == ""
    bad = tether("db", "status", "--db", f"{url}?migrate=perhaps")
    assert bad.returncode != 0 and "migrate=" in bad.stderr and "true or false" in bad.stderr


def _on_one_terminal(*args: str, cwd: Path) -> str:
    """What ``tether ARGS`` writes to a terminal (a pseudo-terminal) that has both its
    stdout and its stderr, in the order a person reads it."""
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    leader, follower = pty.openpty()
    try:
        proc = forked.Popen([sys.executable, "-m", "tether", *args], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    finally:
        os.close(follower)
    from tests.cli.test_fit import read_all

    out = read_all(leader)
    assert proc.wait(timeout=60) == 0, out
    return out.decode().replace("\r\n", "\n")


def test_db_status_says_there_is_no_store_before_the_lines_it_explains(
        tmp_path: Path) -> None:
    """On a terminal, or into one pipe (``2>&1``), the "no Tether store ... yet" line
    (stderr) comes first, then the migrations, all pending (stdout): it came after them
    (and after the terminal's count of pending migrations), below what it explains."""
    url = f"sqlite:///{tmp_path}/none.db"
    said = (f"no Tether store at {tmp_path}/none.db yet: `tether db migrate` (or a "
            "worker's start) creates it there")
    first = "0001 init"
    shown = _on_one_terminal("db", "status", "--db", url, cwd=tmp_path).splitlines()
    assert shown[0] == said and shown[1].startswith(first), shown
    piped = forked.run([sys.executable, "-m", "tether", "db", "status", "--db", url],
                       cwd=tmp_path, env={k: v for k, v in os.environ.items()
                                          if k != "TETHER_DATABASE_URL"},
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=60)
    assert piped.returncode == 0, piped.stdout
    lines = piped.stdout.splitlines()
    assert lines[0] == said and lines[1].startswith(first), lines
    assert len(lines) == 1 + len(load_migrations("tether.store.sqlite"))
    assert not (tmp_path / "none.db").exists()


async def test_sqlite_url_option_turns_auto_migration_off(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/t.db?migrate=false")
    with pytest.raises(ConfigError, match="tether db migrate"):
        await store.open()


def test_queue_limit_and_queues_commands(tmp_path: Path) -> None:
    """``tether queue-limit`` persists a limit that ``tether queues`` lists (text and
    JSON); ``none`` removes it; a bad limit is a usage error naming the value."""
    url = f"sqlite:///{tmp_path}/t.db"
    done = tether("queue-limit", "llm", "2", "--db", url)
    assert done.returncode == 0, done.stderr
    assert "at most 2 runs at once" in done.stdout
    listed = tether("queues", "--db", url)
    assert listed.returncode == 0 and listed.stdout.split()[8:10] == ["llm", "2"]
    as_json = tether("queues", "--json", "--db", url)
    assert json.loads(as_json.stdout) == [{"queue": "llm", "limit": 2, "paused": False,
                                           "limit_before_pause": None, "workflows": [],
                                           "queued": 0, "due": 0, "running": 0,
                                           "waiting": 0, "workers": 0}]
    for bad in ("-1", "two"):
        refused = tether("queue-limit", "llm", bad, "--db", url)
        assert refused.returncode == 2 and repr(bad) in refused.stderr
    paused = tether("queue-limit", "llm", "0", "--db", url)  # ("at most 0 runs at once")
    assert paused.returncode == 0 and paused.stdout.startswith("queue llm: paused"), paused
    assert tether("queue-limit", "llm", "none", "--db", url).returncode == 0
    assert json.loads(tether("queues", "--json", "--db", url).stdout) == []


def test_reading_commands_on_postgresql_create_and_migrate_nothing(pg_url: str) -> None:
    """On an empty PostgreSQL database, ``tether runs`` (a reading command) says there is
    no store and how to make one, and leaves no schema behind; on a store of the previous
    release it names the pending migrations and changes nothing. A writing command
    (``tether start``) migrates as a worker does."""
    import psycopg

    def tables() -> int:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_schema = 'tether'").fetchone()
            assert row is not None
            return int(row[0])

    empty = tether("runs", "--db", pg_url)
    assert empty.returncode == 1 and "no Tether store in PostgreSQL schema 'tether'" \
        in empty.stderr and "tether db migrate" in empty.stderr, empty.stderr
    # `db status` says it in the same words (it said "at PostgreSQL schema ... at ...")
    where = empty.stderr.split("no Tether store ", 1)[1].split(": run ", 1)[0]
    status = tether("db", "status", "--db", pg_url)
    assert status.returncode == 0 and status.stderr == (
        f"no Tether store {where} yet: `tether db migrate` (or a worker's start) creates "
        "it there\n"), (empty.stderr, status.stderr)
    assert tables() == 0
    make_release_one_store(pg_url)
    before = status_lines(pg_url)
    behind = tether("show", "old", "--db", pg_url)
    assert behind.returncode == 1 and "0002_shared_state" in behind.stderr, behind.stderr
    assert status_lines(pg_url) == before
    started = tether("start", "wf", "--id", "new", "--db", pg_url)
    assert started.returncode == 0, started.stderr
    assert all(line.endswith("applied") for line in status_lines(pg_url))


@pytest.mark.parametrize("command", [
    ("versions", "--json"),
    ("schedules",),
    ("schedules", "list", "--json"),
    ("export", "some-run"),
    ("export", "some-run", "--app", "tests.cli.cli_app:app"),
    ("replay", "--check", "tests.cli.cli_app:app", "--workflow", "noop"),
], ids=" ".join)
def test_other_reading_commands_on_postgresql_create_nothing(
        pg_url: str, command: tuple[str, ...]) -> None:
    """``versions``, ``schedules`` (list), ``export`` and ``replay --workflow`` only read,
    like ``tether runs``: on an empty database they say there is no store and leave no
    schema behind (they used to create and migrate one, then answer "no runs")."""
    import psycopg

    done = tether(*command, "--db", pg_url)
    assert done.returncode == 1 and "no Tether store in PostgreSQL schema 'tether'" \
        in done.stderr and done.stdout == "", done
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM information_schema.schemata "
                           "WHERE schema_name = 'tether'").fetchone()
    assert row is not None and row[0] == 0


def test_db_status_tells_a_role_without_create_what_to_run_or_grant(
        pg_url: str, bare_role: tuple[str, str]) -> None:
    """``tether db status`` by a role that may not create the store (or apply its
    migrations) says so, with the grant that lets it, read from the server's privileges:
    it said that `tether db migrate` (or a worker's start) creates the store, and both
    fail for that role. Each grant it names is what it then stops asking for."""
    import psycopg

    role, url = bare_role
    database = urlsplit(pg_url).path.lstrip("/")

    def admin(sql: str) -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql)

    empty = tether("db", "status", "--db", url)
    assert empty.returncode == 0 and empty.stderr == (
        f"no Tether store in PostgreSQL schema 'tether' at {urlsplit(url).hostname}:"
        f"{urlsplit(url).port}/{database} yet: this URL's role '{role}' lacks CREATE on "
        f"database {database}: run `tether db migrate --db URL` as a role that has it (the "
        "database's or the schema's owner), or grant it: GRANT CREATE ON DATABASE "
        f"{database} TO {role};\n"), empty.stderr
    refused = tether("db", "migrate", "--db", url)  # (what status says)
    assert refused.returncode != 0 and "permission denied for database" in refused.stderr

    # A store of the previous release, made by another role: the schema is not this one's.
    make_release_one_store(pg_url)
    admin(f"GRANT USAGE ON SCHEMA tether TO {role}")
    admin(f"GRANT SELECT ON ALL TABLES IN SCHEMA tether TO {role}")
    behind = tether("db", "status", "--db", url)
    total = len(behind.stdout.splitlines())
    assert behind.returncode == 0 and behind.stderr == (
        f"{total - 1} of {total} migrations pending, and this URL's role '{role}' lacks "
        "CREATE on schema tether: run `tether db migrate --db URL` as a role that has it "
        "(the database's or the schema's owner), or grant it: GRANT CREATE ON SCHEMA "
        f"tether TO {role};\n"), behind.stderr
    admin(f"GRANT CREATE ON SCHEMA tether TO {role}")
    owner = tether("db", "status", "--db", url)
    assert owner.stderr.endswith(
        f"lacks the ownership of the store's tables (their owner is postgres): run `tether "
        "db migrate --db URL` as a role that has it (the database's or the schema's "
        f"owner), or grant it: GRANT postgres TO {role};\n"), owner.stderr
    refused = tether("db", "migrate", "--db", url)
    assert refused.returncode != 0 and "must be owner" in refused.stderr, refused.stderr

    # Where the role may create the store, `db status` says what it said before.
    admin("DROP SCHEMA tether CASCADE")
    admin(f"GRANT CREATE ON DATABASE {database} TO {role}")
    fresh = tether("db", "status", "--db", url)
    assert fresh.stderr.endswith("yet: `tether db migrate` (or a worker's start) creates "
                                 "it there\n"), fresh.stderr
    assert tether("db", "migrate", "--db", url).returncode == 0
    assert tether("db", "status", "--db", url, "--check").stderr == ""
