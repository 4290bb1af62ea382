"""Retention per workflow: ``@app.workflow(retention=...)`` wins over ``App(retention=)``
for its runs, shorter or longer, ``"forever"`` keeps them; the app's policy goes on
purging every other run of the store; ``Store.run_purge(workflows=,
exclude_workflows=)``, ``tether purge --workflow`` and MCP tasks' ``ttlMs`` follow.
Real workers on both stores, on a virtual clock moved by the test (the retention loop
itself turns every 0.05 real seconds)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import tether
from tests.engine.helpers import wait_for
from tests.life.test_cli_lifecycle import cli
from tether import App, Retention
from tether.testing import VirtualClock

T0 = 1_800_000_000.0
DAY = 86400.0
QUICK = 0.05  # (real seconds between the retention loop's turns)


async def _gone(app: App, run_id: str) -> bool:
    try:
        await app.get_run(run_id)
    except tether.RunNotFound:
        return True
    return False


async def _run_all(app: App, *starts: tuple[Any, str]) -> None:
    for workflow, run_id in starts:
        assert await (await app.start(workflow, run_id=run_id)).result(timeout=20) == run_id


def _echo_app(url: str, clock: VirtualClock, retention: Any, **own: Any) -> App:
    """An app with a workflow ``plain`` (the app's policy) and one workflow per item of
    ``own`` (name -> its own retention); each returns its run id."""
    app = App(url, clock=clock, retention=retention)

    async def echo() -> str:
        return tether.run_id()

    app.workflow(name="plain")(echo)
    for name, policy in own.items():
        async def mine() -> str:
            return tether.run_id()

        app.workflow(name=name, retention=policy)(mine)
    return app


async def test_a_workflow_kept_for_less_is_purged_while_the_others_are_kept(
        store_url: str) -> None:
    """Chat sessions kept 60 s under an app that keeps its runs 30 days: once the clock
    is past 60 s the worker purges the chat's ended runs and keeps the others'."""
    clock = VirtualClock(T0)
    app = _echo_app(store_url, clock, Retention(older_than="30d", every=QUICK),
                    chat=Retention(older_than=60, every=QUICK))
    async with app, app.worker():
        await _run_all(app, ("chat", "c-1"), ("chat", "c-2"), ("plain", "p-1"))
        clock.advance(120)
        for rid in ("c-1", "c-2"):
            await wait_for(lambda rid=rid: _gone(app, rid), what=f"{rid} purged")
        info = await app.get_run("p-1")  # (the app's 30 days are not over)
    assert info.status.value == "completed"


async def test_a_workflow_kept_for_longer_outlives_the_apps_policy(store_url: str) -> None:
    """The approvals agent's runs kept a year under an app that keeps its runs 60 s:
    the app's purge leaves them (every other run goes), and their own year purges them."""
    clock = VirtualClock(T0)
    app = _echo_app(store_url, clock, Retention(older_than=60, every=QUICK),
                    audit=Retention(older_than="365d", every=QUICK))
    async with app, app.worker():
        await _run_all(app, ("audit", "a-1"), ("plain", "p-1"))
        clock.advance(120)
        await wait_for(lambda: _gone(app, "p-1"), what="p-1 purged by the app's policy")
        # (the app's purge that took p-1 would have taken a-1 in the same statement)
        assert (await app.get_run("a-1")).status.value == "completed"
        clock.advance(365 * DAY)
        await wait_for(lambda: _gone(app, "a-1"), what="a-1 purged after its year")


async def test_a_workflow_kept_forever_is_never_purged_by_retention(
        store_url: str) -> None:
    """``retention="forever"``: ten years on, the app's policy has purged every other
    run and left these; ``tether purge`` (an operator's order) still deletes them."""
    clock = VirtualClock(T0)
    app = _echo_app(store_url, clock, Retention(older_than=60, every=QUICK),
                    ledger="forever")
    async with app, app.worker():
        await _run_all(app, ("ledger", "l-1"), ("plain", "p-1"))
        clock.advance(3650 * DAY)
        await wait_for(lambda: _gone(app, "p-1"), what="p-1 purged by the app's policy")
        assert (await app.get_run("l-1")).status.value == "completed"
        report = await app.store.run_purge(finished_before=clock.now(),
                                           statuses=["completed"], workflows=["ledger"])
    assert report.run_ids == ["l-1"]


async def test_a_workflows_policy_alone_starts_the_retention_loop(store_url: str) -> None:
    """An app without a policy of its own whose workflow has one: the worker purges
    that workflow's runs, and no other run (no app-wide policy)."""
    clock = VirtualClock(T0)
    app = _echo_app(store_url, clock, None, chat=Retention(older_than=60, every=QUICK))
    async with app, app.worker():
        await _run_all(app, ("chat", "c-1"), ("plain", "p-1"))
        clock.advance(3650 * DAY)
        await wait_for(lambda: _gone(app, "c-1"), what="c-1 purged by its own policy")
        assert (await app.get_run("p-1")).status.value == "completed"


async def test_the_apps_policy_still_purges_runs_of_workflows_it_does_not_register(
        store_url: str) -> None:
    """A store shared with another app: this app's policy purges the other app's runs
    as it did before (store-wide), less the workflows this app gives a policy of their
    own; the other app's own policies are not known here (docs/operations.md)."""
    clock = VirtualClock(T0)
    other = App(store_url, clock=clock)

    @other.workflow
    async def theirs() -> str:
        return tether.run_id()

    @other.workflow(retention="forever")  # (applied by the other app's workers only)
    async def their_ledger() -> str:
        return tether.run_id()

    async with other, other.worker():
        await _run_all(other, (theirs, "t-1"), (their_ledger, "tl-1"))
    app = _echo_app(store_url, clock, Retention(older_than=60, every=QUICK),
                    audit="365d")
    async with app, app.worker():
        await _run_all(app, ("audit", "a-1"))
        clock.advance(120)
        for rid in ("t-1", "tl-1"):
            await wait_for(lambda rid=rid: _gone(app, rid), what=f"{rid} purged")
        assert (await app.get_run("a-1")).status.value == "completed"


async def test_run_purge_takes_some_workflows_or_all_but_some(store_url: str) -> None:
    """The store's filters: ``workflows`` (an empty list: none), ``exclude_workflows``,
    both (the first less the second); without them every workflow's, as before."""
    clock = VirtualClock(T0)
    app = _echo_app(store_url, clock, None, a=None, b=None, c=None)
    async with app:
        async with app.worker():
            await _run_all(app, ("a", "a-1"), ("b", "b-1"), ("c", "c-1"), ("c", "c-2"),
                           ("plain", "p-1"))
        store = app.store
        cut: dict[str, Any] = {"finished_before": clock.now() + 1, "statuses": ["completed"]}
        assert (await store.run_purge(**cut, workflows=[])).runs == 0
        assert (await store.run_purge(**cut, workflows=["c", "nope"])).run_ids == [
            "c-1", "c-2"]
        assert (await store.run_purge(**cut, workflows=["a", "b"],
                                      exclude_workflows=["b"])).run_ids == ["a-1"]
        assert (await store.run_purge(**cut, exclude_workflows=["b"])).run_ids == ["p-1"]
        assert (await store.run_purge(**cut)).run_ids == ["b-1"]


def test_tether_purge_takes_the_runs_of_the_workflows_named(store_url: str) -> None:
    """``tether purge --workflow NAME`` (repeatable) deletes those workflows' ended
    runs only; ``--json`` reports as without it; a bad name is a one-line error."""
    import asyncio

    async def setup() -> None:
        app = _echo_app(store_url, VirtualClock(), None, chat=None, draft=None)
        async with app, app.worker():
            await _run_all(app, ("chat", "c-1"), ("chat", "c-2"), ("draft", "d-1"),
                           ("plain", "p-1"))

    asyncio.run(setup())
    done = cli("purge", "--older-than", "0s", "--workflow", "chat", "--json", db=store_url)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["runs"] == 2 and report["run_ids"] == ["c-1", "c-2"]
    assert set(report) == {"runs", "journal_entries", "archived_entries", "attempts",
                           "signals", "payloads", "blobs", "run_ids"}
    done = cli("purge", "--older-than", "0s", "--workflow", "draft", "--workflow", "nope",
               "--workflow", "plain", db=store_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purged 2 runs of workflows draft, nope, plain: "), \
        done.stdout
    bad = cli("purge", "--older-than", "0s", "--workflow", "", db=store_url)
    assert bad.returncode == 2 and "--workflow" in bad.stderr, bad
    assert "Traceback" not in bad.stderr
    helped = " ".join(cli("purge", "--help", db=None).stdout.split())
    assert "--workflow NAME" in helped
    # (a bare number is seconds: the help said only "e.g. 90s, 15m, 12h, 30d, 2w", and
    # `--older-than 30` purged what ended over 30 seconds ago)
    assert "a bare number is seconds (--older-than 30 is 30 seconds, not days)" in helped


def test_tether_purge_warns_of_a_workflow_the_store_does_not_know(store_url: str) -> None:
    """``tether purge --workflow NAME`` of a name no worker registered and no stored run
    has (a typo, or ``--workflow a,b`` written as ``--status`` takes its list) purged
    nothing and said only "purged 0 runs of workflow ...": a warning on stderr says the
    store knows no such workflow, with the closest known name or how to give several.
    A name the store knows gets none, with runs to purge or not."""
    import asyncio

    async def setup() -> None:
        app = _echo_app(store_url, VirtualClock(), None, chat=None, draft=None)
        async with app, app.worker():
            await _run_all(app, ("chat", "c-1"), ("draft", "d-1"))

    asyncio.run(setup())
    done = cli("purge", "--older-than", "0s", "--workflow", "chatt", "--workflow",
               "draft,chat", "--workflow", "zzz", db=store_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purged 0 runs of workflows chatt, draft,chat, zzz: ")
    warnings = [ln for ln in done.stderr.splitlines() if ln.startswith("tether: warning: ")]
    assert len(warnings) == 3, done.stderr
    assert warnings[0].endswith("no run of workflow 'chatt' is stored and no worker has "
                                "registered it; did you mean 'chat'?"), warnings
    assert warnings[1].endswith("no run of workflow 'draft,chat' is stored and no worker "
                                "has registered it; give --workflow once per name (a comma "
                                "list is one name)"), warnings
    assert warnings[2].endswith("no run of workflow 'zzz' is stored and no worker has "
                                "registered it"), warnings
    done = cli("purge", "--older-than", "0s", "--workflow", "chat", db=store_url)
    assert done.returncode == 0 and done.stdout.startswith("purged 1 run of workflow chat")
    again = cli("purge", "--older-than", "0s", "--workflow", "chat", db=store_url)
    assert again.returncode == 0 and "warning" not in again.stderr, again.stderr


async def test_mcp_ttl_follows_the_workflows_own_retention(store_url: str) -> None:
    """A task's ``ttlMs`` says when retention may discard it: from its workflow's own
    policy when it has one (1 hour, under an app that keeps runs 30 days), ``null`` for
    a workflow kept forever, the app's for the others."""
    from tether.serve.mcp import TetherTasks

    clock = VirtualClock(T0)
    app = App(store_url, clock=clock, retention="30d")

    @app.workflow(mcp=True, retention="1h")
    async def brief() -> str:
        return "ok"

    @app.workflow(mcp=True, retention="forever")
    async def kept() -> str:
        return "ok"

    @app.workflow(mcp=True)
    async def usual() -> str:
        return "ok"

    tasks = TetherTasks(app)
    ttl: dict[str, Any] = {}
    async with app, app.worker():
        for wf in (brief, kept, usual):
            handle = await app.start(wf)
            await handle.result(timeout=20)
            task = await tasks.get_task(handle.run_id)
            assert task is not None
            run = await app.get_run(handle.run_id)
            assert run.finished_at is not None
            ttl[wf.__name__] = (task["ttlMs"], run.finished_at - run.created_at)
    assert ttl["brief"][0] == int((ttl["brief"][1] + 3600) * 1000)
    assert ttl["kept"][0] is None
    assert ttl["usual"][0] == int((ttl["usual"][1] + 30 * DAY) * 1000)


def test_a_workflows_retention_is_checked_when_it_is_declared() -> None:
    app = App("sqlite:///never-opened.db")
    for bad in (False, True, "eventually", -1, float("inf")):
        with pytest.raises(tether.ConfigError, match="retention"):
            app.workflow(name="w", retention=bad)
    app.workflow(name="w", retention=" forever ")(_noop)
    assert app.workflows()["w"].retention == "forever"
    app.workflow(name="x", retention="7d")(_noop)
    assert app.workflows()["x"].retention == Retention(older_than=7 * DAY)


async def _noop() -> None:
    return None


def test_an_agent_takes_a_retention_for_its_workflow() -> None:
    """``tether.ai.Agent(retention=)``: the agent's workflow gets it (the worker then
    applies it as any workflow's); a bad one is refused when the agent is registered."""
    from tether.ai import LLM, Agent

    model = LLM("openai:gpt-4.1-mini", base_url="http://127.0.0.1:9/v1", api_key="k")
    app = App("sqlite:///never-opened.db")
    app.add_agent(Agent("approvals", model=model, retention="365d"))
    assert app.workflows()["approvals"].retention == Retention(older_than=365 * DAY)
    with pytest.raises(tether.ConfigError, match="retention"):
        App("sqlite:///never-opened.db").add_agent(Agent("bad", model=model,
                                                         retention=False))


@pytest.mark.postgres
async def test_a_purge_of_some_workflows_reads_only_their_due_runs_on_postgres(
        pg_migrated_url: str) -> None:
    """The purge of one workflow, and the app's purge less some workflows, read their
    due runs through runs_workflow_finished (migration 0016), not runs_finished through
    every older run of the workflows left out: a chat workflow kept 7 days beside an
    audit workflow kept a year walked the audit's runs at every turn (1.2 M runs:
    545,618 read to find 100, 1.5 s, holding the lock on blob_refs; now 0.4 ms). Also
    planned for any parameters (a prepared statement's generic plan)."""
    import psycopg

    from tether.store.postgres import PostgresStore

    store = PostgresStore(pg_migrated_url)
    async with await psycopg.AsyncConnection.connect(pg_migrated_url,
                                                     autocommit=True) as raw:
        await raw.execute("""
            INSERT INTO tether.runs (run_id, workflow, queue, status, input, created_at,
                                     updated_at, finished_at)
            SELECT 'r' || i, CASE WHEN i <= 100 THEN 'chat' WHEN i <= 200 THEN 'plain'
                                  ELSE 'audit' END, 'q', 'completed', '[]', f, f, f
            FROM (SELECT i, CASE WHEN i <= 100 THEN %(t0)s - 8 * 86400.0
                                 WHEN i <= 200 THEN %(t0)s - 31 * 86400.0
                                 ELSE %(t0)s - 40 * 86400.0 - i END AS f
                  FROM generate_series(1, 20000) AS i) AS x
        """, {"t0": T0})
        await raw.execute("ANALYZE tether.runs")
        for generic in (False, True):
            for cut, which in ((7 * DAY, {"workflows": ["chat"]}),
                               (30 * DAY, {"exclude": ["audit"]})):
                sql, params = store._lifecycle.purge_candidates(
                    T0 - cut, ["completed", "failed", "cancelled"], 500, **which)
                async with raw.transaction(force_rollback=True):
                    if generic:
                        await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                    cur = await raw.execute(
                        "EXPLAIN (ANALYZE, FORMAT JSON) " + sql.replace("{s}", "tether"),
                        params, prepare=generic)
                    (doc,), = await cur.fetchall()
                scans = [n for n in _plan_nodes(doc[0]["Plan"]) if n.get("Alias") == "r"]
                assert [n.get("Index Name") for n in scans] == ["runs_workflow_finished"], \
                    (which, generic, doc)
                assert scans[0]["Actual Rows"] == 100, doc
                assert scans[0].get("Rows Removed by Filter", 0) == 0, doc


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _plan_nodes(child))]


def test_a_purge_of_some_workflows_searches_their_index_on_sqlite(tmp_path: Any) -> None:
    """SQLite: purge_candidates_of is a range of tether_runs_workflow_finished (migration
    0017) in its order (no sort of every due run), and the workflows with ended runs are
    listed one probe of it each (run_purge's exclude)."""
    import asyncio

    import apsw

    from tether.store import open_store
    from tether.store._sql import load_queries

    url = f"sqlite:///{tmp_path / 'plan.db'}"

    async def migrate() -> None:
        s = open_store(url)
        await s.open()
        await s.close()

    asyncio.run(migrate())
    conn = apsw.Connection(str(tmp_path / "plan.db"))
    queries = load_queries("tether.store.sqlite", "lifecycle.sql")

    def plan(name: str, params: dict[str, Any]) -> list[str]:
        return [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + queries[name], params)]

    found = plan("purge_candidates_of", {"workflows": '["chat"]', "finished_before": T0,
                                         "statuses": '["completed"]', "limit": 500})
    assert any(p.startswith("SEARCH tether_runs USING INDEX tether_runs_workflow_finished "
                            "(workflow=? AND finished_at") for p in found), found
    assert not any("TEMP B-TREE" in p for p in found), found
    assert plan("purge_workflow_after", {"after": "a"}) == [
        "SEARCH tether_runs USING COVERING INDEX tether_runs_workflow_finished "
        "(workflow>?)"]
    conn.close()


def test_the_integrations_agents_take_a_retention_for_their_workflow() -> None:
    """``TetherAgent(retention=)`` of the pydantic-ai and OpenAI Agents integrations, as
    ``tether.ai.Agent``'s."""
    pytest.importorskip("pydantic_ai")
    pytest.importorskip("agents")
    from agents import Agent as OpenAIAgent
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.models.test import TestModel

    from tether.integrations.openai_agents import TetherAgent as OpenAITetherAgent
    from tether.integrations.pydantic_ai import TetherAgent as PydanticTetherAgent

    app = App("sqlite:///never-opened.db")
    PydanticTetherAgent(PydanticAgent(TestModel(), name="drafts"), app=app,
                        retention="forever")
    OpenAITetherAgent(OpenAIAgent(name="triage"), app=app, retention="2d")
    assert app.workflows()["drafts"].retention == "forever"
    assert app.workflows()["triage"].retention == Retention(older_than=2 * DAY)


async def test_a_test_environment_purges_nothing(tmp_path: Any) -> None:
    """``TestEnv`` leaves out the app's retention (runs are not purged under a test as
    its virtual clock skips), and so the workflows' own: its worker had a retention
    loop for them, which would purge the test's runs once the clock passed their
    policy. The app itself keeps its policies."""
    from tether.testing import TestEnv

    app = App(f"sqlite:///{tmp_path / 'app.db'}", retention="30d")

    @app.workflow(retention=Retention(older_than=60, every=QUICK))
    async def chat() -> str:
        return "hi"

    async with TestEnv(app) as env:
        assert await env.run(chat) == "hi"
        assert env.app.workflows()["chat"].retention is None
        assert "tether-retention" not in [t.get_name() for t in env.worker._loops]
    assert app.workflows()["chat"].retention == Retention(older_than=60, every=QUICK)
