"""``tether db copy --to URL``: a store with runs in every state a worker left them in
(ended, waiting for a signal, for an approval, sleeping, killed mid-way, on a paused
queue) and a schedule, copied with real ``tether`` processes from SQLite to PostgreSQL
and back, after which a worker on the target takes every run on where it stopped; and
the refusals, each leaving both stores as they were: a source a worker uses, a target
that holds runs, a source of a newer schema or behind, an unreachable target. A copy
killed (SIGKILL) before its commit leaves the target empty, and the next one works."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import psycopg
import pytest

from tests import forked
from tests.cli.test_restore import (
    ROOT,
    _env,
    _long_lived,
    _opened,
    _runs,
    _stop,
    _until,
    _workers,
)
from tests.conftest import DB_PREFIX, _create_database, _database_url, _drop_database
from tests.forked import stop_process
from tether import App
from tether.store import open_store
from tether.store._copy import COPIED, NOT_COPIED

APP = "tests.cli.copy_app:app"


def _tether(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return forked.run([sys.executable, "-m", "tether", *args], cwd=ROOT, env=_env(tmp),
                      capture_output=True, text=True, timeout=300)


def _worker(db: str, tmp: Path, name: str) -> subprocess.Popen[bytes]:
    with open(tmp / f"{name}.log", "wb") as out:
        return forked.Popen([sys.executable, "-m", "tether", "worker", APP, "--db", db,
                             "--lease", "2"],
                            cwd=ROOT, env=_env(tmp), stdout=out, stderr=subprocess.STDOUT)


def _steps(tmp: Path) -> Counter[tuple[str, str]]:
    """(pid, step key) of every step execution so far."""
    path = tmp / "side.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(tuple(line.split(" ", 1)) for line in lines)  # type: ignore[misc]


async def _store_in_every_state(tmp: Path, url: str) -> int:
    """Runs a worker leaves: ``done`` (ended), ``waiting`` (a signal), ``approval``, ``sleeping``
    (a timer), ``midway`` (three steps journaled, its worker killed in the fourth: it
    holds a lease), ``parked`` (queued on a paused queue); the schedule ``yearly``, due
    now. Returns the pid of the worker, killed."""
    assert _tether(tmp, "queue-pause", "held", "--db", url).returncode == 0
    app = App(url)
    try:
        await app.start("ends", 3, run_id="done")
        await app.start("waits", run_id="waiting")
        await app.start("approves", run_id="approval")
        await app.start("sleeps", 8.0, run_id="sleeping")
        await app.start("midway", str(tmp / "gate"), run_id="midway")
        await app.start("ends", 1, run_id="parked", queue="held")
        worker = _worker(url, tmp, "worker-source")

        async def settled() -> bool:
            status = {r: (await app.get_run(r)).status for r in
                      ("done", "waiting", "approval", "sleeping")}
            waiting_for = (await app.get_run("approval")).waiting_for
            return (status == {"done": "completed", "waiting": "waiting",
                               "approval": "waiting", "sleeping": "waiting"}
                    and waiting_for == "signal approval"
                    and any(key == "midway:3" for _, key in _steps(tmp)))

        await _until("the runs settle", settled, worker)
    finally:
        await app.close()
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    return worker.pid


def _due_now(url: str) -> None:
    """The schedule's next tick made due (a yearly cron: it would not fire in a test)."""
    now = time.time() - 1
    if url.startswith("sqlite:"):
        conn = apsw.Connection(url.removeprefix("sqlite:///"))
        conn.execute("UPDATE tether_schedules SET next_tick = ?", (now,))
        conn.close()
    else:
        bare, _, schema = url.partition("?schema=")
        with psycopg.connect(bare, autocommit=True) as conn:
            conn.execute(f"UPDATE {schema or 'tether'}.schedules SET next_tick = %s", (now,))


async def _events(url: str) -> dict[str, list[tuple[str, str, Any]]]:
    """Each run's live events as ``tether serve`` reads them: (id, kind, data)."""
    store = open_store(url, **({"read_only": True} if url.startswith("sqlite:") else {}))
    await store.open()
    try:
        out = {}
        for run_id in await _runs(url):
            out[run_id] = [(e.event_id, e.kind, json.loads(e.data) if e.data else None)
                           for e in await store.run_events_read(run_id=run_id, after=None)]
        return out
    finally:
        await store.close()


def _show(tmp: Path, url: str, run_id: str) -> dict[str, Any]:
    out = _tether(tmp, "show", run_id, "--json", "--db", url)
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    for attempt in doc.get("attempts", []):
        attempt.pop("attempt_id", None)  # (SQLite's first attempts have none of their own)
    return doc


async def _copy_and_go_on(tmp: Path, source: str, target: str) -> None:
    killed = await _store_in_every_state(tmp, source)
    _due_now(source)
    before = await _runs(source)
    shown = _show(tmp, source, "done")
    out = _tether(tmp, "db", "copy", "--db", source, "--to", target, "--json")
    assert out.returncode == 0, out.stderr
    copied = json.loads(out.stdout)
    assert copied["copied"] is True
    assert (copied["runs"], copied["waiting"]) == (6, 3)
    assert copied["counts"]["runs"] == 6
    assert copied["counts"]["schedules"] == 1 and copied["counts"]["queue_limits"] == 1
    assert copied["counts"]["journal"] >= 10 and copied["counts"]["run_events"] > 0
    assert copied["schema_version"] > 0 and copied["seconds"] >= 0
    # The source is only read: its runs as they were; a copy into the target again is
    # refused, the target unchanged.
    assert await _runs(source) == before
    assert await _runs(target) == before
    # The live events, ids and all: a client's Last-Event-ID goes on on the target.
    events = await _events(source)
    assert events["done"] and await _events(target) == events
    again = _tether(tmp, "db", "copy", "--db", source, "--to", target)
    assert again.returncode == 2, again.stderr
    assert "is not empty (it holds 6 runs, " in again.stderr, again.stderr
    assert await _runs(target) == before
    # The same document and result on both (the run's own figures: no store field).
    assert _show(tmp, target, "done") == shown
    results = [_tether(tmp, "result", "done", "--db", url) for url in (source, target)]
    assert results[0].returncode == results[1].returncode == 0
    assert results[0].stdout == results[1].stdout
    assert json.loads(results[1].stdout) == [0, 1, 2]
    # A worker on the target takes every run on where it stopped.
    (tmp / "gate").touch()
    worker = _worker(target, tmp, "worker-target")
    try:
        sent = _tether(tmp, "signal", "waiting", "go", "--data", '{"to": "target"}',
                       "--db", target)
        assert sent.returncode == 0, sent.stderr
        approved = _tether(tmp, "approve", "approval", "--db", target)
        assert approved.returncode == 0, approved.stderr
        app = App(target)
        try:
            got = {r: await asyncio.wait_for(app.handle(r).result(), 60) for r in
                   ("waiting", "approval", "sleeping", "midway")}
            assert got == {"waiting": {"to": "target"}, "approval": True,
                           "sleeping": "slept", "midway": "through"}

            async def fired() -> bool:
                runs = await app.list_runs(limit=100)
                return any(r.workflow == "ticked" and r.status == "completed"
                           for r in runs)

            await _until("the schedule fires on the target", fired, worker)
            assert (await app.get_run("parked")).status == "queued"
        finally:
            await app.close()
    finally:
        stop_process(worker, 60)
    assert worker.returncode == 0, (tmp / "worker-target.log").read_text()
    # Each of midway's three journaled steps ran once, on the source: the target's
    # worker replayed them from the journal and ran the fourth (cut off) again.
    steps = _steps(tmp)
    for i in range(3):
        assert sum(n for (_, key), n in steps.items() if key == f"midway:{i}") == 1
    assert steps[(str(killed), "midway:3")] == 1
    assert steps[(str(worker.pid), "midway:3")] == 1
    store = open_store(target)
    await store.open()
    try:
        assert await store.queue_pauses() == {"held": None}
        assert all(w.pid != killed for w in await store.worker_list())
    finally:
        await store.close()
    # The source's waiting run still waits: the signal went to the target only.
    assert (await _runs(source))["waiting"][0] == "waiting"


async def test_sqlite_to_postgres_and_back(tmp_path: Path, pg_url: str) -> None:
    there = tmp_path / "there"
    there.mkdir()
    await _copy_and_go_on(there, f"sqlite:///{there / 'source.db'}", pg_url)
    back = tmp_path / "back"
    back.mkdir()
    # Back: the PostgreSQL store (its runs now ended, or parked) into a new file, and a
    # new state of every kind made on it, copied into another new file.
    target = f"sqlite:///{back / 'copy.db'}"
    out = _tether(back, "db", "copy", "--db", pg_url, "--to", target)
    assert out.returncode == 0, out.stderr
    assert await _runs(target) == await _runs(pg_url)


async def test_postgres_to_sqlite(tmp_path: Path, pg_url: str) -> None:
    await _copy_and_go_on(tmp_path, pg_url, f"sqlite:///{tmp_path / 'copy.db'}")


async def test_sqlite_to_a_new_sqlite_file(tmp_path: Path) -> None:
    await _copy_and_go_on(tmp_path, f"sqlite:///{tmp_path / 'source.db'}",
                          f"sqlite:///{tmp_path / 'copy.db'}")


async def test_the_attempts_a_user_sees_are_the_same_after_a_copy_either_way(
        tmp_path: Path, pg_url: str) -> None:
    """Runs with first-try successes (SQLite writes no row for most of them: its
    journal and tether_leases give them), retries, a continue-as-new and a step failed
    for good: `tether show --json` lists the same attempts, ids and times included, on
    a SQLite copy, a PostgreSQL copy (every attempt a row) and a SQLite copy of that."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    app = App(source)
    try:
        await app.start("retried", 0, run_id="retried")
        await app.start("fails", run_id="fails")
        worker = _worker(source, tmp_path, "worker-source")

        async def ended() -> bool:
            return [(await app.get_run(r)).status for r in ("retried", "fails")] == [
                "completed", "failed"]

        try:
            await _until("the runs end", ended, worker)
        finally:
            stop_process(worker, 60)
    finally:
        await app.close()

    def shown(url: str) -> dict[str, Any]:
        out = {}
        for run_id in ("retried", "fails"):
            got = _tether(tmp_path, "show", run_id, "--json", "--db", url)
            assert got.returncode == 0, got.stderr
            out[run_id] = json.loads(got.stdout)
        return out

    before = shown(source)
    assert [(a["generation"], a["position"], a["attempt"], a["status"])
            for a in before["retried"]["attempts"]] == [
        (g, p, n, s) for g in (0, 1) for p, n, s in (
            (0, 1, "ok"), (1, 1, "ok"), (2, 1, "error"), (2, 2, "error"), (2, 3, "ok"),
            (3, 1, "ok"))]
    assert [(a["position"], a["attempt"], a["status"])
            for a in before["fails"]["attempts"]] == [
        (0, 1, "ok"), (1, 1, "error"), (1, 2, "error")]
    copies = [(source, f"sqlite:///{tmp_path / 'copy.db'}"), (source, pg_url),
              (pg_url, f"sqlite:///{tmp_path / 'back.db'}")]
    for src, dst in copies:
        out = _tether(tmp_path, "db", "copy", "--db", src, "--to", dst, "--json")
        assert out.returncode == 0, out.stderr
        assert shown(dst) == before, (src, dst)


@pytest.fixture
def other_db_url() -> Iterator[str]:
    """A second empty database of the shared server, dropped after the test."""
    name = f"{DB_PREFIX}copy_{uuid.uuid4().hex[:12]}"
    _create_database(name)
    try:
        yield _database_url(name)
    finally:
        _drop_database(name)


async def test_postgres_to_another_database(tmp_path: Path, pg_url: str,
                                            other_db_url: str) -> None:
    await _copy_and_go_on(tmp_path, pg_url, other_db_url)


async def test_postgres_to_another_schema_of_the_same_database(
        tmp_path: Path, pg_url: str) -> None:
    await _copy_and_go_on(tmp_path, pg_url, f"{pg_url}?schema=copied")


def test_every_table_of_both_schemas_is_copied_or_said_why_not() -> None:
    """A table a new migration adds must be placed in COPIED or NOT_COPIED."""
    folder = ROOT / "src" / "tether" / "store"
    for backend in ("sqlite", "postgres"):
        for sql in (folder / backend / "migrations").glob("*.sql"):
            for name in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(?:\{schema\}\.)?"
                                   r"(?:tether_)?(\w+)", sql.read_text()):
                if name.endswith("_0010"):
                    continue  # (SQLite's 0010 builds run_events under another name)
                assert name in COPIED or name in NOT_COPIED, (backend, sql.name, name)


async def test_a_copy_killed_before_its_commit_leaves_the_target_empty(
        tmp_path: Path, pg_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    app = App(source)
    try:
        for i in range(20):
            await app.start("waits", run_id=f"w-{i}")
    finally:
        await app.close()
    for target in (pg_url, f"sqlite:///{tmp_path / 'copy.db'}"):
        script = ("import asyncio, os, signal\n"
                  "from tether import _faults\n"
                  "from tether.store._copy import copy_store\n"
                  "_faults.arm('copy.written', lambda: os.kill(os.getpid(), signal.SIGKILL))\n"
                  f"asyncio.run(copy_store({source!r}, {target!r}))\n")
        killed = forked.run([sys.executable, "-c", script], cwd=ROOT, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert await _runs(target) == {}
        out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("copied 20 runs (0 waiting) from "), out.stdout
        assert sorted(await _runs(target)) == sorted(f"w-{i}" for i in range(20))


async def test_refusals_change_neither_store(tmp_path: Path, pg_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    path = tmp_path / "source.db"
    app = App(source)
    try:
        await app.start("waits", run_id="w")
    finally:
        await app.close()
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    # A worker on the source.
    worker = _worker(source, tmp_path, "worker")
    try:
        async def registered() -> bool:
            return bool(await _workers(source))

        await _until("the worker registers", registered, worker)
        (info,) = await _workers(source)
        out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
        assert out.returncode == 2
        assert out.stderr.startswith(
            f"tether: error: the source: {path} is in use by worker {info.worker_id} (pid "
            f"{worker.pid} on {socket.gethostname()}, last heartbeat "), out.stderr
        assert out.stderr.endswith(
            f"stop it (kill -TERM {worker.pid}: it hands its runs back and leaves), then "
            "run the copy again\n"), out.stderr
    finally:
        stop_process(worker, 60)
    assert not os.path.exists(tmp_path / "copy.db")
    before = await _runs(source)
    # A target that holds runs (PostgreSQL).
    other = App(pg_url)
    try:
        await other.start("waits", run_id="kept")
    finally:
        await other.close()
    out = _tether(tmp_path, "db", "copy", "--db", source, "--to", pg_url)
    assert out.returncode == 2
    assert out.stderr.startswith("tether: error: the target (schema tether at "), out.stderr
    assert "is not empty (it holds 1 run): a copy goes into an empty store " \
        "only" in out.stderr, out.stderr
    assert sorted(await _runs(pg_url)) == ["kept"]
    # An unreachable target: exit 1, as for every command whose store cannot be reached.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _tether(tmp_path, "db", "copy", "--db", source, "--to",
                  f"postgresql://postgres@127.0.0.1:{port}/none?connect_timeout=2")
    assert out.returncode == 1, out.stderr
    assert "127.0.0.1" in out.stderr and "Traceback" not in out.stderr, out.stderr
    # A source of a newer schema, and one behind.
    conn = apsw.Connection(str(path))
    conn.execute("INSERT INTO tether_schema_version VALUES (9999, 'future', 0)")
    out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
    assert out.returncode == 2
    assert out.stderr.startswith(
        f"tether: error: the source ({path}) has schema version 9999, newer than this "
        "Tether knows (up to "), out.stderr
    assert out.stderr.endswith(
        "): copy it with the Tether version that wrote it, or upgrade tether\n")
    conn.execute("DELETE FROM tether_schema_version WHERE version >= 9999")
    newest = conn.execute("SELECT max(version) FROM tether_schema_version").fetchall()[0][0]
    conn.execute("DELETE FROM tether_schema_version WHERE version = ?", (newest,))
    conn.execute("DELETE FROM tether_schema_compatible WHERE version = ?", (newest,))
    conn.close()
    out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
    assert out.returncode == 2
    assert f"the source ({path}) is behind (pending: {newest:04d}_" in out.stderr
    assert "run `tether db migrate --db URL` with its URL first" in out.stderr
    assert not os.path.exists(tmp_path / "copy.db")
    conn = apsw.Connection(str(path))
    conn.execute("INSERT INTO tether_schema_version VALUES (?, 'put back', 0)", (newest,))
    conn.close()
    assert await _runs(source) == before


async def test_encrypted_payloads_stay_readable_with_the_same_key(
        tmp_path: Path, pg_url: str) -> None:
    """Payloads are copied as stored: the target's runs read with the key, and the
    bytes in the store are the source's (no clear text)."""
    from tether.encryption import AesGcm

    hook = AesGcm({"k1": bytes(range(32))})
    source = f"sqlite:///{tmp_path / 'source.db'}"
    app = App(source, payload_hook=hook)
    try:
        await app.start("sleeps", 4111.5, run_id="secret")
        await app.signal("secret", "other", {"card": "4111"})
    finally:
        await app.close()
    stored = apsw.Connection(str(tmp_path / "source.db")).execute(
        "SELECT r.input, s.payload FROM tether_runs r JOIN tether_signals s USING (run_id)"
    ).fetchall()[0]
    assert "4111" not in stored[0] and "4111" not in stored[1]
    out = _tether(tmp_path, "db", "copy", "--db", source, "--to", pg_url)
    assert out.returncode == 0, out.stderr
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT r.input, s.payload FROM tether.runs r JOIN "
                            "tether.signals s USING (run_id)").fetchall() == [stored]
    copy = App(pg_url, payload_hook=hook)
    try:
        run = await copy.get_run("secret")
        assert run.status == "queued"
        assert "4111.5" in repr(run.input), run.input
    finally:
        await copy.close()


async def test_postgres_events_from_before_its_migration_0013_are_numbered_again(
        tmp_path: Path, pg_url: str) -> None:
    """A run's events stored before PostgreSQL's migration 0013 have ids
    ``<txid>-<event_id>``, which SQLite never makes: that run's events are numbered
    again, after its creation time in microseconds as SQLite numbers them, in the order
    they were read; another run's keep their ids."""
    app = App(pg_url)
    try:
        await app.start("waits", run_id="old")
        await app.start("waits", run_id="new")
    finally:
        await app.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO tether.run_events (run_id, kind, data, txid) VALUES
                ('old', 'status', '{"status": "running", "waiting_for": null}', '900'),
                ('old', 'o', '0 1 ok step tick it', '800'),
                ('old', 's', 'waiting signal go', NULL),
                ('new', 's', 'running', NULL)""")
    before = await _events(pg_url)
    assert [e[0].count("-") for e in before["old"]] == [1, 1, 0]
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    out = _tether(tmp_path, "db", "copy", "--db", pg_url, "--to", target)
    assert out.returncode == 0, out.stderr
    after = await _events(target)
    assert [e[1:] for e in after["old"]] == [e[1:] for e in before["old"]]
    assert after["old"][0][1:] == ("op", {"position": 0, "attempts": 1, "status": "ok",
                                          "kind": "step", "name": "tick it"})
    app = App(target)
    try:
        created = (await app.get_run("old")).created_at
    finally:
        await app.close()
    assert [int(e[0]) for e in after["old"]] == [int(created * 1_000_000) + i
                                                 for i in (1, 2, 3)]
    assert after["new"] == before["new"]


async def test_a_worker_started_on_the_source_during_the_copy_makes_it_roll_back(
        tmp_path: Path, pg_url: str) -> None:
    """The source is checked again once its rows are written, before the target's
    commit: a worker that started on it meanwhile may have changed it since the
    snapshot the copy read, so the copy is refused and the target left empty."""
    from tether import _faults
    from tether.store import CopyRefused, copy_store

    source = f"sqlite:///{tmp_path / 'source.db'}"
    app = App(source)
    try:
        await app.start("waits", run_id="w")
    finally:
        await app.close()
    started: list[subprocess.Popen[bytes]] = []

    def start_a_worker() -> None:  # (in the copy's event loop: it waits, blocking)
        started.append(_worker(source, tmp_path, "worker"))
        conn = apsw.Connection(str(tmp_path / "source.db"))
        try:
            for _ in range(1200):
                if conn.execute("SELECT count(*) FROM tether_workers").fetchall()[0][0]:
                    return
                time.sleep(0.05)
        finally:
            conn.close()
        raise AssertionError("the worker never registered")

    _faults.arm("copy.read", start_a_worker)
    try:
        with pytest.raises(CopyRefused, match=r"^the source: .* is in use by worker "):
            await copy_store(source, pg_url)
    finally:
        _faults.disarm_all()
        for worker in started:
            stop_process(worker, 60)
    assert await _runs(pg_url) == {}


async def test_a_copy_between_schemas_of_one_database_minds_only_those_two(
        tmp_path: Path, pg_url: str) -> None:
    """Workers on an unrelated schema ``c`` of the same database do not keep a copy
    from schema ``a`` to schema ``b`` from being made; a worker on ``a`` (the source)
    or on ``b`` (the target) does, each refusal leaving the target empty."""
    a, c = f"{pg_url}?schema=a", f"{pg_url}?schema=c"
    for url in (a, c):
        app = App(url)
        try:
            await app.start("waits", run_id="w")
        finally:
            await app.close()
    on_c = _worker(c, tmp_path, "worker-c")
    try:
        async def registered(url: str) -> bool:
            return bool(await _workers(url))

        await _until("the worker on c registers", lambda: registered(c), on_c)
        out = _tether(tmp_path, "db", "copy", "--db", a, "--to", f"{pg_url}?schema=b",
                      "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["runs"] == 1
        assert await _runs(f"{pg_url}?schema=b") == await _runs(a)
        # A worker on the source.
        on_a = _worker(a, tmp_path, "worker-a")
        try:
            await _until("the worker on a registers", lambda: registered(a), on_a)
            out = _tether(tmp_path, "db", "copy", "--db", a, "--to",
                          f"{pg_url}?schema=b2")
            assert out.returncode == 2, out.stderr
            assert out.stderr.startswith(
                "tether: error: the source: the store (schema a at "), out.stderr
            assert "is in use by worker " in out.stderr, out.stderr
        finally:
            stop_process(on_a, 60)
        # A worker on the target (an empty store, which it created).
        on_b = _worker(f"{pg_url}?schema=b3", tmp_path, "worker-b3")
        try:
            await _until("the worker on b3 registers",
                         lambda: registered(f"{pg_url}?schema=b3"), on_b)
            out = _tether(tmp_path, "db", "copy", "--db", a, "--to",
                          f"{pg_url}?schema=b3")
            assert out.returncode == 2, out.stderr
            assert out.stderr.startswith(
                "tether: error: the target: the store (schema b3 at "), out.stderr
            assert "is in use by worker " in out.stderr, out.stderr
        finally:
            stop_process(on_b, 60)
        assert await _runs(f"{pg_url}?schema=b3") == {}
        assert on_c.poll() is None
    finally:
        stop_process(on_c, 60)


async def test_a_session_on_another_schema_is_not_taken_for_one_on_the_source(
        tmp_path: Path, pg_url: str) -> None:
    """A Tether session on schema ``c`` whose last statement is a worker's heartbeat
    (``... FROM c.runs r ... r.run_id``, an alias named like the schema ``r``) does not
    keep a copy of schema ``r`` from being made: a session counts for the schemas its
    statement names as schemas (``r.runs``, ``r.publish(``, ``r_wake``), not for a
    table's alias."""
    from tether.store.postgres import PostgresStore

    source = f"{pg_url}?schema=r"
    app = App(source)
    try:
        await app.start("waits", run_id="w")
    finally:
        await app.close()
    other = PostgresStore(f"{pg_url}?schema=c", pool_min=1, pool_max=1)
    await other.open()
    try:
        await other.lease_heartbeat(worker_id="w-c", now=time.time(), lease_seconds=30)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            last = conn.execute("SELECT query FROM pg_stat_activity WHERE application_name "
                                "= 'tether' AND query LIKE '%%c.runs%%'").fetchall()
        assert last and " r." in last[0][0], last
        out = _tether(tmp_path, "db", "copy", "--db", source, "--to",
                      f"{pg_url}?schema=b", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["runs"] == 1
    finally:
        await other.close()


async def test_a_copy_into_postgres_as_a_role_that_does_not_own_the_schema(
        tmp_path: Path, pg_url: str) -> None:
    """A role with a worker's grants (docs/postgres.md) may not copy into the store:
    one sentence names the role that owns the schema, exit 1, nothing written."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    app = App(source)
    try:
        await app.start("waits", run_id="w")
    finally:
        await app.close()
    store = open_store(pg_url)
    await store.open()
    await store.close()
    role = f"{DB_PREFIX}app_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA tether TO {role}")
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tether "
                     f"TO {role}")
        conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA tether TO {role}")
    try:
        as_app = pg_url.replace("postgres@", f"{role}@", 1)
        out = _tether(tmp_path, "db", "copy", "--db", source, "--to", as_app)
        assert out.returncode == 1, out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith(
            f"tether: error: PostgreSQL role '{role}' may not copy into the Tether store "
            "in schema 'tether' at "), out.stderr
        assert "nothing was copied): a copy into PostgreSQL turns" in out.stderr
        assert "so run it as that role, 'postgres' (" in out.stderr, out.stderr
        assert await _runs(pg_url) == {}
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


async def test_a_copy_from_postgres_into_postgres_as_a_role_that_does_not_own_the_target(
        tmp_path: Path, pg_url: str) -> None:
    """The target's "permission denied" is told as the target's when the source is a
    PostgreSQL store too (it was translated as the source's, naming the source's role
    and schema, and the owner's role was not named)."""
    source = pg_url + "?schema=copy_src"
    app = App(source)
    try:
        await app.start("waits", run_id="w")
    finally:
        await app.close()
    store = open_store(pg_url)
    await store.open()
    await store.close()
    role = f"{DB_PREFIX}app_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        for schema in ("tether", "copy_src"):
            conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "
                         f"{schema} TO {role}")
            conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
    try:
        as_app = pg_url.replace("postgres@", f"{role}@", 1)
        out = _tether(tmp_path, "db", "copy", "--db", as_app + "?schema=copy_src",
                      "--to", as_app)
        assert out.returncode == 1, out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith(
            f"tether: error: PostgreSQL role '{role}' may not copy into the Tether store "
            "in schema 'tether' at "), out.stderr
        assert "so run it as that role, 'postgres' (" in out.stderr, out.stderr
        assert await _runs(pg_url) == {}
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("kind", ["serve", "mcp"])
async def test_postgres_a_tether_serve_or_mcp_on_the_source_is_named(
        tmp_path: Path, pg_url: str, kind: str) -> None:
    """``tether serve`` and ``tether mcp --no-worker`` register no worker, and in a
    database with another Tether schema their idle sessions (last statement a COMMIT)
    named no schema: the copy went ahead under them. Their presence session names them
    (kind, pid, host); once they stop the copy is made."""
    source, target = f"{pg_url}?schema=a", f"{pg_url}?schema=b"
    assert _tether(tmp_path, "db", "migrate", "--db", f"{pg_url}?schema=c").returncode == 0
    app = App(source)
    try:
        await app.start("waits", run_id="w")
    finally:
        await app.close()
    proc, port = _long_lived(kind, source, tmp_path)
    try:
        await _opened(kind, proc, port, source)
        out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(
            "tether: error: the source: the store (schema a at "), out.stderr
        assert (f" is in use by tether {kind} (pid {proc.pid} on {socket.gethostname()}, "
                "PostgreSQL session ") in out.stderr, out.stderr
        assert f"stop it (kill -TERM {proc.pid}), then run the copy again" in out.stderr
        assert await _runs(target) == {}
    finally:
        _stop(proc)
    out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["runs"] == 1


async def test_postgres_a_tether_serve_killed_with_sigkill_does_not_hold_the_copy(
        tmp_path: Path, pg_url: str) -> None:
    """A serve killed with -9 leaves no registration behind: its presence session ends
    with its socket, and the copy is made (no wait for a heartbeat to go stale)."""
    source, target = f"{pg_url}?schema=a", f"{pg_url}?schema=b"
    assert _tether(tmp_path, "db", "migrate", "--db", f"{pg_url}?schema=c").returncode == 0
    assert _tether(tmp_path, "db", "migrate", "--db", source).returncode == 0
    proc, port = _long_lived("serve", source, tmp_path)
    try:
        await _opened("serve", proc, port, source)
        out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
        assert out.returncode == 2 and " is in use by tether serve " in out.stderr, out.stderr
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        _stop(proc)

    async def gone() -> bool:  # (the server ends the session as it reads the socket's end)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            return not conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s",
                (f"tether-serve {proc.pid}@%",)).fetchall()

    await _until("the killed serve's session ends", gone)
    out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("kind", ["serve", "mcp"])
async def test_sqlite_a_tether_serve_or_mcp_on_the_source_is_named(
        tmp_path: Path, kind: str) -> None:
    """A SQLite store ``tether serve`` or ``tether mcp --no-worker`` has open: the
    refusal names the command (kind), its pid and host, as a worker's does; once it
    stops the copy is made."""
    source, target = f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    app = App(source)
    try:
        await app.start("waits", run_id="w")
    finally:
        await app.close()
    proc, port = _long_lived(kind, source, tmp_path)
    try:
        await _opened(kind, proc, port, source)
        out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(
            f"tether: error: the source: {tmp_path / 'source.db'} is in use by tether "
            f"{kind} (pid {proc.pid} on {socket.gethostname()}): stop it (kill -TERM "
            f"{proc.pid}), then run the copy again"), out.stderr
    finally:
        _stop(proc)
    assert not (tmp_path / "b.db").exists() or await _runs(target) == {}
    out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["runs"] == 1


async def test_postgres_a_tether_serve_takes_its_presence_again_after_losing_it(
        tmp_path: Path, pg_url: str) -> None:
    """The presence session of a serve ended under it (an outage, an operator's
    pg_terminate_backend) is made again at its next check (every query_timeout, here
    2 s): the serve is seen by the copy again, not only until its first outage."""
    source, target = f"{pg_url}?schema=a", f"{pg_url}?schema=b"
    assert _tether(tmp_path, "db", "migrate", "--db", f"{pg_url}?schema=c").returncode == 0
    assert _tether(tmp_path, "db", "migrate", "--db", source).returncode == 0
    proc, port = _long_lived("serve", f"{source}&query_timeout=2", tmp_path)
    name = f"tether-serve {proc.pid}@{socket.gethostname()}"

    def sessions() -> list[int]:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            return [r[0] for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,))]

    try:
        await _opened("serve", proc, port, source)
        await _until("the presence session", lambda: asyncio.to_thread(sessions), proc)
        first = sessions()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (first[0],))

        async def again() -> bool:
            now = await asyncio.to_thread(sessions)
            return bool(now) and now != first

        await _until("the presence session is made again", again, proc)
        out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
        assert out.returncode == 2, out.stderr
        assert f" is in use by tether serve (pid {proc.pid} on " in out.stderr, out.stderr
    finally:
        _stop(proc)


async def test_sqlite_a_tether_serve_killed_with_sigkill_does_not_hold_the_copy(
        tmp_path: Path) -> None:
    """A SQLite serve killed with -9: its lock on the ``-shm`` file goes with it, and
    the copy is made at once."""
    source, target = f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    assert _tether(tmp_path, "db", "migrate", "--db", source).returncode == 0
    proc, port = _long_lived("serve", source, tmp_path)
    try:
        await _opened("serve", proc, port, source)
        out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
        assert out.returncode == 2 and " is in use by tether serve " in out.stderr, out.stderr
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        _stop(proc)
    out = _tether(tmp_path, "db", "copy", "--db", source, "--to", target)
    assert out.returncode == 0, out.stderr
