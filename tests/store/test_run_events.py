"""Stored run events (for Server-Sent Events) on every backend: a run's events come back
once each, in order, after any cursor; on SQLite they survive migration 0010 (ids per
run) and a run purged and started again under its id gets ids above the old ones."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import apsw
import pytest

from tests.engine.helpers import wait_for
from tether._types import Lease
from tether.store import Store, Wait, open_store
from tether.store._sql import load_migrations

from .conftest import T0, entry, start_and_claim


async def events_of(store: Store, run_id: str, after: str | None = None) -> list[tuple[str, str]]:
    return [(e.kind, e.event_id) for e in await store.run_events_read(run_id=run_id,
                                                                      after=after)]


async def test_each_event_once_in_order_after_any_cursor(store: Store) -> None:
    a = await start_and_claim(store, "a", queue="qa")
    b = await start_and_claim(store, "b", queue="qb")
    for pos in range(3):
        await store.journal_append(lease=a.lease, entry=entry(pos))
        await store.journal_append(lease=b.lease, entry=entry(pos))
    await store.run_publish(run_id="a", data='{"type": "llm.chunk", "text": "hi"}')
    await store.run_finish(lease=a.lease, status="completed", result="1", error=None,
                           now=T0 + 1)
    got = await store.run_events_read(run_id="a", after=None)
    assert [e.kind for e in got] == ["status", "op", "op", "op", "chunk", "status"]
    assert [e.data for e in got if e.kind == "chunk"] == ['{"type": "llm.chunk", "text": "hi"}']
    for i, ev in enumerate(got):
        assert [e.event_id for e in await store.run_events_read(
            run_id="a", after=ev.event_id)] == [e.event_id for e in got[i + 1:]]
    assert [k for k, _ in await events_of(store, "b")] == ["status", "op", "op", "op"]
    # A cursor is one run's: run_event_exists tells it from another run's, or one never
    # made (which run_events_read takes for a point of the run's events). (On SQLite,
    # ids are counted per run from its creation time: runs created in the same
    # microsecond, as these two, share ids, each a point of either.)
    a_ids = [e.event_id for e in got]
    b_ids = [i for _, i in await events_of(store, "b")]
    for event_id in {*a_ids, *b_ids}:
        for run_id, ids in (("a", a_ids), ("b", b_ids)):
            assert await store.run_event_exists(run_id=run_id, event_id=event_id) is (
                event_id in ids), (run_id, event_id)
    never = str(max(int(i) for i in [*a_ids, *b_ids]) + 1)
    assert not await store.run_event_exists(run_id="a", event_id=never)
    assert not await store.run_event_exists(run_id="nope", event_id=got[0].event_id)


async def _assert_latest_is_the_tail(store: Store, run_id: str) -> int:
    """``run_events_latest`` of every limit, of every kind or of one, is the tail of what
    ``run_events_read`` reads of the run: the same events, ids and JSON text, in order.
    Returns how many events the run has."""
    every = [(e.event_id, e.kind, e.data)
             for e in await store.run_events_read(run_id=run_id, after=None, limit=100000)]
    for kind in (None, "status", "op", "live", "chunk"):
        of_kind = [e for e in every if kind is None or e[1] == kind]
        for limit in range(len(of_kind) + 2):
            got = [(e.event_id, e.kind, e.data)
                   for e in await store.run_events_latest(run_id=run_id, limit=limit,
                                                          kind=kind)]
            assert got == of_kind[max(0, len(of_kind) - limit):] if limit else not got, (
                kind, limit)
    return len(every)


async def test_the_latest_events_are_the_tail_of_the_events_read(store: Store) -> None:
    """``run_events_latest`` reads a run's newest events (of one kind if asked) backwards
    through the index: they are the last ones ``run_events_read`` reads, in its order,
    with its ids, and none of another run's."""
    a = await start_and_claim(store, "a", queue="qa")
    b = await start_and_claim(store, "b", queue="qb")
    for pos in range(3):
        await store.journal_append(lease=a.lease, entry=entry(pos))
        await store.run_publish(run_id="a", data=json.dumps({"position": pos, "text": "x"}))
        await store.journal_append(lease=b.lease, entry=entry(pos))
        await store.run_set_status_info(lease=a.lease, info=str(pos), now=T0)
    await store.run_publish(run_id="b", data='{"text": "b"}')
    await store.run_finish(lease=a.lease, status="completed", result="1", error=None,
                           now=T0 + 1)
    assert await _assert_latest_is_the_tail(store, "a") == 1 + 3 * 3 + 1
    assert await _assert_latest_is_the_tail(store, "b") == 1 + 3 + 1
    assert await store.run_events_latest(run_id="nope", limit=5) == []


async def _count(store: Store, run_id: str, n: int) -> bool:
    return len(await store.run_events_read(run_id=run_id, after=None)) >= n


def _store_at_0004(path: Path) -> None:
    """A SQLite store as migrations 0001 to 0004 left it, with a run that has events."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE tether_schema_version (version INTEGER PRIMARY KEY, "
                 "name TEXT NOT NULL, applied_at REAL NOT NULL)")
    for version, name, sql in load_migrations("tether.store.sqlite"):
        if version <= 4:
            conn.execute(sql)
            conn.execute("INSERT INTO tether_schema_version VALUES (?, ?, 0)", (version, name))
    for run_id in ("filler", "old"):
        conn.execute("INSERT INTO tether_runs (run_id, workflow, queue, status, input, "
                     "created_at, updated_at, available_at, fencing_token) VALUES "
                     "(?, 'wf', 'q', 'running', '[[], {}]', ?, ?, NULL, 1)", (run_id, T0, T0))
        for pos in range(2):
            conn.execute("INSERT INTO tether_journal (run_id, position, kind, name, status, "
                         "result, attempts, fencing_token) VALUES "
                         "(?, ?, 'step', 's', 'ok', '1', 1, 1)", (run_id, pos))
    conn.close()


async def test_migration_0010_keeps_old_events_and_continues_above_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    _store_at_0004(path)
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        before = await events_of(store, "old")
        assert before == [("op", "3"), ("op", "4")]  # global ids under migration 0004
        lease = Lease("old", "w", 1)
        await store.journal_append(lease=lease, entry=entry(2))
        await store.run_finish(lease=lease, status="completed", result="1", error=None,
                               now=T0 + 1)
        after = await events_of(store, "old", after="4")
        assert [k for k, _ in after] == ["op", "status"]
        assert [int(i) for _, i in after] == [5, 6]
    finally:
        await store.close()


async def test_a_run_purged_and_started_again_gets_ids_above_the_old_ones(
    sqlite_url: str,
) -> None:
    store = open_store(sqlite_url)
    await store.open()
    try:
        old = await start_and_claim(store, "r")
        await store.journal_append(lease=old.lease, entry=entry(0))
        await store.run_finish(lease=old.lease, status="completed", result="1", error=None,
                               now=T0 + 1)
        last = (await events_of(store, "r"))[-1][1]
        report = await store.run_purge(finished_before=T0 + 2, statuses=["completed"])
        assert report.runs == 1 and await events_of(store, "r") == []
        again = await start_and_claim(store, "r", now=T0 + 3)
        await store.journal_append(lease=again.lease, entry=entry(0, now=T0 + 3))
        assert [k for k, _ in await events_of(store, "r", after=last)] == ["status", "op"]
    finally:
        await store.close()


async def _scenario(store: Store, run_id: str, part: int) -> None:
    """Events of every kind, with texts that a compact encoding could get wrong (spaces,
    a newline, quotes, non-ASCII, an empty description); ``part`` 0 before a migration,
    1 after it."""
    if part == 0:
        claimed = await start_and_claim(store, run_id)
        lease = claimed.lease
        await store.journal_append(lease=lease, entry=entry(0, name='say "h\u00e9llo"\n to  all'))
        retry = entry(1, "pending", name="flaky step")
        retry.error = '{"type": "E", "message": "no"}'
        await store.journal_append(lease=lease, entry=retry)
        await store.run_set_status_info(lease=lease, info='{"stage": 1}', now=T0)
        await store.run_publish(run_id=run_id, data='{"type": "llm.chunk", "text": "a b"}')
        await store.run_release(lease=lease, wait=Wait(T0 + 1, "timer until  later \u00e9"),
                                now=T0)
        return
    claimed = await start_and_claim(store, run_id, now=T0 + 2)
    lease = claimed.lease
    await store.journal_append(lease=lease, entry=entry(1, name="flaky step", now=T0 + 2))
    await store.run_release(lease=lease, wait=Wait(T0 + 3, ""), now=T0 + 2)
    claimed = await start_and_claim(store, run_id, now=T0 + 4)
    await store.run_finish(lease=claimed.lease, status="completed", result="1", error=None,
                           now=T0 + 4)


def _appends_before_0009(init: Any) -> Any:
    """``PostgresStore.__init__`` with the append statements as they were before migration
    0009: no op events of their own (the trigger of a schema that old writes them all)."""
    from tether.store.postgres import _store as pg_store
    from tether.store.postgres._raw import Prepared

    def before(sql: str) -> str:
        body = sql.partition("w AS (")[2].partition("    RETURNING j.run_id")[0]
        cut = body.replace(" AND (SELECT f FROM flag) = 'statement'", "").replace(
            "    WHERE (SELECT f FROM flag) = 'statement'\n", "")
        assert body and cut.count("flag") == 0, "the append statements changed"
        return cut + "    RETURNING j.run_id, j.position"

    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for name in ("journal_append", "journal_append_one"):
            self._q[name] = before(self._q[name])
        self._append_one = Prepared("tether_append_one_0008", self._q["journal_append_one"],
                                    pg_store._APPEND_ONE_TYPES)

    return patched


async def _read_all(store: Store, run_id: str, n: int) -> list[tuple[str, str, str | None]]:
    await wait_for(lambda: _count(store, run_id, n), timeout=30, what="the events")
    return [(e.event_id, e.kind, e.data)
            for e in await store.run_events_read(run_id=run_id, after=None)]


@pytest.mark.parametrize("backend", [
    "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_compact_events_read_as_before_and_old_ones_are_kept(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Migrations 0007 (PostgreSQL) and 0011 (SQLite) store status and op events
    compactly: a reader gets the same kinds and the same JSON text as from the triggers
    before them, for rows stored before the migration and after it, in order, resuming
    after any cursor."""
    if backend == "postgres":
        from tether.store.postgres import PostgresStore, _migrate

        pg_url = str(request.getfixturevalue("pg_url"))
        old_url, new_url = f"{pg_url}?schema=old", f"{pg_url}?schema=new"
        every = _migrate.migrations
        monkeypatch.setattr(_migrate, "migrations",
                            lambda schema: [m for m in every(schema) if m[0] <= 6])
        monkeypatch.setattr(PostgresStore, "__init__", _appends_before_0009(
            PostgresStore.__init__))
    else:
        from tether.store.sqlite import _store as sqlite_store

        old_url, new_url = f"sqlite:///{tmp_path}/old.db", f"sqlite:///{tmp_path}/new.db"
        monkeypatch.setattr(sqlite_store, "load_migrations", lambda package: [
            m for m in load_migrations(package) if m[0] <= 10])
    old = open_store(old_url)
    await old.open()
    try:
        await _scenario(old, "r", 0)
        before = await _read_all(old, "r", 6)
    finally:
        await old.close()
    monkeypatch.undo()
    new, migrated = open_store(new_url), open_store(old_url)
    await new.open()
    await migrated.open()
    try:
        await _scenario(new, "r", 0)
        fresh = await _read_all(new, "r", 6)
        assert [(k, d) for _, k, d in fresh] == [(k, d) for _, k, d in before]
        assert [k for _, k, _ in before] == ["status", "op", "op", "live", "chunk", "status"]
        assert await _read_all(migrated, "r", 6) == before  # rows of the older triggers
        await _scenario(migrated, "r", 1)
        await _scenario(new, "r", 1)
        got = await _read_all(migrated, "r", 11)
        assert [(k, d) for _, k, d in got] == [(k, d) for _, k, d in
                                               await _read_all(new, "r", 11)]
        assert got[:6] == before
        assert [k for _, k, _ in got[6:]] == ["status", "op", "status", "status", "status"]
        for i, (event_id, _, _) in enumerate(got):
            after = await migrated.run_events_read(run_id="r", after=event_id)
            assert [e.event_id for e in after] == [e for e, _, _ in got[i + 1:]]
        # The older rows' kinds ("op", "status") and the compact ones, read backwards.
        assert await _assert_latest_is_the_tail(migrated, "r") == 11
    finally:
        await new.close()
        await migrated.close()


@pytest.mark.postgres
async def test_appends_write_each_op_event_once_and_other_writers_keep_the_trigger(
        pg_migrated_url: str) -> None:
    """PostgreSQL (migration 0009): a lone append and batches of appends write the op
    events of their final entries themselves, one each, in position order; a pending
    entry with an error (a retry's back-off) still gets its event from the trigger; and
    the flag that makes the trigger skip lives only in the appends' own transaction, so a
    journal row written afterwards on the same connection by anything else still gets
    its event."""
    import psycopg

    store = open_store(pg_migrated_url)
    await store.open()
    try:
        a = (await start_and_claim(store, "a", queue="qa")).lease
        b = (await start_and_claim(store, "b", queue="qb")).lease
        await store.journal_append(lease=a, entry=entry(0))  # alone
        writer = store._writer  # type: ignore[attr-defined]
        before = (writer.batches, writer.entries)
        await asyncio.gather(*[store.journal_append(lease=lease, entry=entry(pos))
                               for pos in range(1, 6) for lease in (a, b)])  # batches
        assert writer.entries - before[1] > writer.batches - before[0]  # some of several
        retry = entry(6, "pending")
        retry.error = '{"type": "E", "message": "no"}'
        await store.journal_append(lease=a, entry=retry)
        ops = [e.data for e in await store.run_events_read(run_id="a", after=None)
               if e.kind == "op"]
        assert [(json.loads(d)["position"], json.loads(d)["status"]) for d in ops] == [
            *[(pos, "ok") for pos in range(6)], (6, "pending")]
        assert [k for k, _ in await events_of(store, "b")] == ["status", *["op"] * 5]
        schema = store.schema  # type: ignore[attr-defined]
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(pg_migrated_url,
                                                     autocommit=True) as conn:
        async with conn.transaction():
            await conn.execute("SELECT set_config('tether.op_events', 'statement', true)")
            await conn.execute(f"INSERT INTO {schema}.journal (run_id, position, kind, name, "
                               "status, attempts, fencing_token) "
                               "VALUES ('b', 6, 'step', 's', 'ok', 1, 1)")
        await conn.execute(f"INSERT INTO {schema}.journal (run_id, position, kind, name, "
                           "status, attempts, fencing_token) "
                           "VALUES ('b', 7, 'step', 's', 'ok', 1, 1)")
        cur = await conn.execute(f"SELECT data FROM {schema}.run_events "
                                 "WHERE run_id = 'b' AND kind = 'o' ORDER BY event_id")
        rows = [r[0] for r in await cur.fetchall()]
    # Written while the flag was set, by a statement that writes no event: none (the
    # contract of the flag); written after that transaction: the trigger's.
    assert [r.split()[0] for r in rows] == ["1", "2", "3", "4", "5", "7"]


@pytest.mark.postgres
async def test_a_transaction_open_elsewhere_on_the_server_holds_back_no_event(
        pg_migrated_url: str) -> None:
    """PostgreSQL (migration 0013): a transaction left open in another database of the
    same server (here one that took a transaction id and went idle, as a session left
    "idle in transaction" after a write does) holds back none of a run's events: they
    are read as soon as they are committed, each once, after any cursor. (Before, a
    reader showed only events older than every transaction still open on the server:
    none, until that one ended.)"""
    import psycopg

    from tests.conftest import PG_ADMIN_URL

    store = open_store(pg_migrated_url)
    await store.open()
    async with await psycopg.AsyncConnection.connect(PG_ADMIN_URL) as elsewhere:
        await elsewhere.execute("SELECT pg_current_xact_id()")  # open, with an xid
        try:
            lease = (await start_and_claim(store, "a")).lease
            for pos in range(2):
                await store.journal_append(lease=lease, entry=entry(pos))
            await store.run_publish(run_id="a", data='{"type": "llm.chunk", "text": "hi"}')
            await store.run_finish(lease=lease, status="completed", result="1", error=None,
                                   now=T0 + 1)
            got = await store.run_events_read(run_id="a", after=None)  # once, no wait
            assert [e.kind for e in got] == ["status", "op", "op", "chunk", "status"]
            for i, ev in enumerate(got):
                assert [e.event_id for e in await store.run_events_read(
                    run_id="a", after=ev.event_id)] == [e.event_id for e in got[i + 1:]]
        finally:
            await elsewhere.rollback()
            await store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("late_write", ["append", "journal_sql"])
async def test_an_event_that_commits_late_is_never_skipped(
        pg_migrated_url: str, late_write: str) -> None:
    """PostgreSQL (migration 0013): event ids are taken in commit order per run. While a
    transaction that wrote one of a run's events (the store's own append statement, or
    an operator's INSERT into the journal, whose trigger writes the event; run by hand
    and left open, after it wrote elsewhere first: its transaction id is older) has not
    committed, the run's other writers (a lone append, a streamed chunk) wait for it
    instead of committing events with later ids, so a reader sees none of them, and
    once it commits, a reader from the cursor it had gets all three, in commit order,
    once. With the appends locking the run's row FOR SHARE, or a chunk or the journal's
    trigger not locking it, the later event would commit first and the reader's cursor
    would pass the late one."""
    import psycopg

    store = open_store(pg_migrated_url)
    await store.open()
    try:
        lease = (await start_and_claim(store, "a")).lease
        await store.journal_append(lease=lease, entry=entry(0))
        seen = await store.run_events_read(run_id="a", after=None)
        assert [e.kind for e in seen] == ["status", "op"]
        cursor = seen[-1].event_id
        schema = store.schema  # type: ignore[attr-defined]
        one = entry(1)
        async with await psycopg.AsyncConnection.connect(pg_migrated_url) as late:
            await late.execute(f"INSERT INTO {schema}.kv (key, value, version, updated_at) "
                               "VALUES ('elsewhere', '1', 1, 0)")
            if late_write == "append":
                await late.execute(store._q["journal_append_one"], {  # type: ignore[attr-defined]
                    "run_id": "a", "fencing_token": lease.fencing_token,
                    "position": one.position, "kind": one.kind.value, "name": one.name,
                    "status": one.status.value, "result": one.result, "error": None,
                    "attempts": one.attempts, "started_at": one.started_at,
                    "finished_at": one.finished_at, "next_attempt_at": None, "args": None})
            else:
                await late.execute(f"INSERT INTO {schema}.journal (run_id, position, kind, "
                                   "name, status, result, attempts, fencing_token) VALUES "
                                   "('a', 1, 'step', 'step', 'ok', '1', 1, %s)",
                                   (lease.fencing_token,))
            append = asyncio.create_task(store.journal_append(lease=lease, entry=entry(2)))
            chunk = asyncio.create_task(store.run_publish(
                run_id="a", data='{"type": "llm.chunk", "text": "hi"}'))
            await asyncio.sleep(0.5)
            # A client following the stream reads now, and again after the commit.
            during = await store.run_events_read(run_id="a", after=cursor)
            await late.commit()
        await asyncio.gather(append, chunk)
        after = await store.run_events_read(
            run_id="a", after=during[-1].event_id if during else cursor)
        followed = during + after
        ops = [json.loads(e.data)["position"] for e in followed if e.kind == "op"]
        assert ops == [1, 2], f"the client got ops {ops}"
        assert [e.kind for e in followed].count("chunk") == 1
        assert during == [], "events committed while an earlier one was still open"
        assert followed[0].kind == "op"  # the late one first: it committed first
        assert [e.event_id for e in await store.run_events_read(run_id="a", after=None)] == [
            *[e.event_id for e in seen], *[e.event_id for e in followed]]
    finally:
        await store.close()


@pytest.mark.postgres
async def test_cursors_held_across_migration_0013_resume_without_skip_or_repeat(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client holds a cursor (Last-Event-ID, ``<txid>-<event_id>``) from before
    migration 0013; after it, a read from that cursor gets the rest of the older rows,
    then the new ones (ids ``<event_id>``), each once, in order."""
    from tether.store.postgres import _migrate

    every = _migrate.migrations
    monkeypatch.setattr(_migrate, "migrations",
                        lambda schema: [m for m in every(schema) if m[0] <= 12])
    old = open_store(pg_url)
    await old.open()
    try:
        await _scenario(old, "r", 0)
        before = await _read_all(old, "r", 6)
    finally:
        await old.close()
    assert all("-" in event_id for event_id, _, _ in before)
    monkeypatch.undo()
    migrated = open_store(pg_url)
    await migrated.open()
    try:
        assert await _read_all(migrated, "r", 6) == before
        await _scenario(migrated, "r", 1)
        got = [(e.event_id, e.kind, e.data)
               for e in await migrated.run_events_read(run_id="r", after=None)]
        assert got[:6] == before
        assert [k for _, k, _ in got[6:]] == ["status", "op", "status", "status", "status"]
        assert all(event_id.isdigit() for event_id, _, _ in got[6:])
        for event_id, _, _ in got:  # an id of either form is the run's, and its alone
            assert await migrated.run_event_exists(run_id="r", event_id=event_id)
            assert not await migrated.run_event_exists(run_id="r2", event_id=event_id)
        for i, (event_id, _, _) in enumerate(got):
            for limit in (1, 500):  # a page that ends among the older rows, and one not
                after = await migrated.run_events_read(run_id="r", after=event_id,
                                                       limit=limit)
                assert [e.event_id for e in after] == [e for e, _, _ in got[i + 1:]][:limit]
        # Backwards, the rows stored since come first, then the older ones (txid).
        assert await _assert_latest_is_the_tail(migrated, "r") == 11
    finally:
        await migrated.close()


@pytest.mark.postgres
async def test_an_event_id_this_store_never_made_is_refused(pg_migrated_url: str) -> None:
    store = open_store(pg_migrated_url)
    await store.open()
    try:
        for bad in ("x", "1-", "-1", "1-2-3", "9" * 20, "1-" + "9" * 20, " 1"):
            with pytest.raises(ValueError, match="not an event id"):
                await store.run_events_read(run_id="r", after=bad)
            with pytest.raises(ValueError, match="not an event id"):
                await store.run_event_exists(run_id="r", event_id=bad)
        assert await store.run_events_read(run_id="r", after="5") == []
        assert await store.run_events_read(run_id="r", after="7-5") == []
        assert not await store.run_event_exists(run_id="r", event_id="5")
        assert not await store.run_event_exists(run_id="r", event_id="7-5")
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_reader_following_concurrent_writers_gets_every_event_once(
        pg_migrated_url: str) -> None:
    """PostgreSQL (migration 0013): chunks published from several connections at once,
    appends and live-status changes of one run, while a reader follows the run's events
    from cursor to cursor: what it got is every event the run has, once, in order."""
    store = open_store(pg_migrated_url)
    await store.open()
    try:
        lease = (await start_and_claim(store, "a")).lease
        done = asyncio.Event()

        async def chunks(who: int) -> None:
            for i in range(40):
                await store.run_publish(run_id="a", data=json.dumps({"who": who, "i": i}))

        async def appends() -> None:
            for pos in range(40):
                await store.journal_append(lease=lease, entry=entry(pos))
                if pos % 4 == 0:
                    await store.run_set_status_info(lease=lease, info=str(pos), now=T0)

        async def follow() -> list[str]:
            got: list[str] = []
            while True:
                last = done.is_set()
                batch = await store.run_events_read(run_id="a", after=got[-1] if got else None)
                got += [e.event_id for e in batch]
                if last and not batch:
                    return got

        reader = asyncio.create_task(follow())
        await asyncio.gather(appends(), *[chunks(who) for who in range(4)])
        done.set()
        followed = await reader
        every = [e.event_id for e in await store.run_events_read(run_id="a", after=None,
                                                                 limit=10000)]
        assert len(every) == 1 + 40 + 10 + 4 * 40  # running, ops, live, chunks
        assert followed == every
    finally:
        await store.close()


@pytest.mark.postgres
async def test_the_events_index_holds_a_hash_of_the_run_id_not_the_id(
        pg_migrated_url: str) -> None:
    """PostgreSQL (migration 0018): the index of the events stored since 0013 is keyed by
    a 64-bit hash of the run id, not by the id (32 characters for an id Tether makes
    up): its entries are 28 bytes with their line pointers, not 68, which is ~70 of the
    bytes a run waiting on a signal keeps. Readers tell apart runs by the id itself, and
    a run deleted takes its events along (the forgetting trigger reads the same index)."""
    import psycopg

    store = open_store(pg_migrated_url)
    await store.open()
    try:
        await start_and_claim(store, "a" * 32)
        schema = store.schema  # type: ignore[attr-defined]
        async with await psycopg.AsyncConnection.connect(pg_migrated_url,
                                                         autocommit=True) as conn:
            # The pooled database was emptied by DELETE after an earlier test: its
            # indexes keep the pages that test's events grew (once 205 bytes an event
            # here): rebuilt from the rows left, as a new store's.
            await conn.execute(f"REINDEX TABLE {schema}.run_events")
            # Two events each of 2,000 runs with 32-character ids, as a parked run's
            # status events are stored (the trigger's rows).
            await conn.execute(
                f"INSERT INTO {schema}.run_events (run_id, kind, data) "
                "SELECT md5((i % 2000)::text), 's', "
                "CASE WHEN i < 2000 THEN 'running' ELSE 'waiting signal go' END "
                "FROM generate_series(0, 3999) AS i ORDER BY i")
            cur = await conn.execute(
                "SELECT sum(pg_relation_size(indexrelid)) FROM pg_index "
                "WHERE indrelid = %s::regclass", (f"{schema}.run_events",))
            index_bytes = (await cur.fetchone())[0]  # type: ignore[index]
            # 28 bytes an entry, pages filled ~70 % by keys in no order, their headers:
            # 45-52 bytes an event, whole pages of every index of the table counted (the
            # splits of keys in no order vary by a page or two); keyed by the id
            # itself, ~115.
            assert index_bytes / 4000 < 90, index_bytes / 4000
            run = await conn.execute("SELECT md5('7')")
            rid = (await run.fetchone())[0]  # type: ignore[index]
            got = await store.run_events_read(run_id=rid, after=None)
            assert [e.data for e in got] == [
                '{"status" : "running", "waiting_for" : null}',
                '{"status" : "waiting", "waiting_for" : "signal go"}']
            assert [e.event_id for e in await store.run_events_latest(
                run_id=rid, limit=1)] == [got[-1].event_id]
            assert await store.run_event_exists(run_id=rid, event_id=got[0].event_id)
            assert not await store.run_event_exists(run_id="a" * 32,
                                                    event_id=got[0].event_id)
            assert [e.kind for e in await store.run_events_read(
                run_id="a" * 32, after=None)] == ["status"]
            await conn.execute(f"DELETE FROM {schema}.runs WHERE run_id = %s", ("a" * 32,))
            assert await store.run_events_read(run_id="a" * 32, after=None) == []
            assert len(await store.run_events_read(run_id=rid, after=None)) == 2
    finally:
        await store.close()
