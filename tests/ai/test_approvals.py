"""Approval gates: the run waits released for a human; reject with a note (the model
reads it), then approve; stale, doubled and malformed answers; the Python API and the
``tether approvals`` / ``tether approve`` commands."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tether
from tests import forked
from tether import App, RunNotFound, RunStatus
from tether.ai import (
    LLM,
    Agent,
    NoPendingApproval,
    PendingApproval,
    approve,
    function_tool,
    pending_approval,
    pending_approvals,
    pending_approvals_page,
    reject,
    request_approval,
)
from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
async def llm(server: ScriptedLLMServer) -> AsyncIterator[LLM]:
    async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as client:
        yield client


def tool_messages(request: RecordedRequest) -> list[str]:
    return [m["content"] for m in request.body["messages"] if m["role"] == "tool"]


async def next_pending(app: App, after: PendingApproval | None = None,
                       timeout: float = 20.0) -> PendingApproval:
    """Wait until an approval (other than ``after``) is pending; return the only one."""
    deadline = time.monotonic() + timeout
    while True:
        found = [p for p in await pending_approvals(app)
                 if after is None or p.approval_id != after.approval_id]
        if found:
            assert len(found) == 1
            return found[0]
        if time.monotonic() > deadline:
            raise TimeoutError("no approval became pending")
        await asyncio.sleep(0.02)


def booking_app(url: str, llm: LLM, booked: list[dict[str, Any]]) -> App:
    app = App(url)

    @function_tool(requires_approval=True)
    def book_flight(destination: str, price_usd: float) -> str:
        """Book a flight (spends money).

        Args:
            destination: the city.
            price_usd: the fare.
        """
        booked.append({"destination": destination, "price_usd": price_usd})
        return f"booked {destination} for ${price_usd}"

    app.add_agent(Agent("travel", model=llm, tools=[book_flight]))
    return app


def booking_script(server: ScriptedLLMServer) -> None:
    server.set_script([
        Reply("Rome is cheapest, I want to book it.",
              tool_calls=[{"name": "book_flight",
                           "arguments": {"destination": "Rome", "price_usd": 420.0}}]),
        Reply("The human said no; trying Lisbon.",
              tool_calls=[{"name": "book_flight",
                           "arguments": {"destination": "Lisbon", "price_usd": 180.0}}]),
        Reply("Booked Lisbon."),
    ])


async def test_reject_with_a_note_then_approve(store_url: str, server: ScriptedLLMServer,
                                               llm: LLM) -> None:
    """A rejected call does not run and the model reads the human's note; the approved
    one runs once; both answers are in the journal; the run waits released meanwhile."""
    booked: list[dict[str, Any]] = []
    app = booking_app(store_url, llm, booked)
    booking_script(server)
    async with app, app.worker():
        handle = await app.start("travel", "Book me a cheap flight", run_id="trip-1")
        first = await next_pending(app)
        assert (first.run_id, first.agent, first.tool) == ("trip-1", "travel", "book_flight")
        assert first.arguments == {"destination": "Rome", "price_usd": 420.0}
        assert first.reason == "Rome is cheapest, I want to book it."
        assert first.since == pytest.approx(time.time(), abs=30)
        info = await app.get_run("trip-1")
        assert info.status is RunStatus.WAITING
        assert info.waiting_for == "signal approval"
        assert booked == []
        answered = await reject(app, "trip-1", note="too expensive, stay under $200")
        assert answered == first

        second = await next_pending(app, after=first)
        assert second.arguments == {"destination": "Lisbon", "price_usd": 180.0}
        assert second.approval_id != first.approval_id
        await approve(app, "trip-1", note="fine")
        assert await handle.result(timeout=20) == "Booked Lisbon."
        info = await app.get_run("trip-1")
        assert await pending_approvals(app) == []
    assert booked == [{"destination": "Lisbon", "price_usd": 180.0}]
    assert tool_messages(server.requests[1]) == [
        "rejected by a human: too expensive, stay under $200"]
    assert tool_messages(server.requests[2])[-1] == "booked Lisbon for $180.0"
    decisions = [e["result"] for e in info.journal if e["kind"] == "signal"]
    assert decisions == [
        {"approved": False, "note": "too expensive, stay under $200",
         "approval_id": first.approval_id},
        {"approved": True, "note": "fine", "approval_id": second.approval_id}]
    assert [e["name"] for e in info.journal if e["kind"] == "step"].count(
        "travel.tool:book_flight") == 1


async def test_answering_twice_or_without_a_pending_approval_is_an_error(
        sqlite_url: str, server: ScriptedLLMServer, llm: LLM) -> None:
    """A second answer to the same approval is refused (not applied to the next one);
    a run that waits for no approval, or no run at all, gets a clear error."""
    booked: list[dict[str, Any]] = []
    app = booking_app(sqlite_url, llm, booked)
    booking_script(server)
    async with app:
        async with app.worker():
            handle = await app.start("travel", "Book me a cheap flight", run_id="trip-2")
            first = await next_pending(app)
        # No worker now, so the run cannot take the first answer before the second is
        # sent: both meet the same pending approval, and the signal's idempotency key
        # drops the second (it must not answer the next approval).
        await reject(app, "trip-2", note="no")
        with pytest.raises(NoPendingApproval, match="was answered already"):
            await approve(app, "trip-2")
        async with app.worker():
            await next_pending(app, after=first)
            await approve(app, "trip-2")
            await handle.result(timeout=20)
        with pytest.raises(NoPendingApproval,
                           match=r"run 'trip-2' has no pending approval: it has ended"):
            await approve(app, "trip-2")
        with pytest.raises(RunNotFound):
            await approve(app, "no-such-run")
        assert await pending_approval(app, "trip-2") is None
    assert booked == [{"destination": "Lisbon", "price_usd": 180.0}]


async def test_an_answer_to_a_run_waiting_for_something_else_names_what_it_waits_for(
        sqlite_url: str) -> None:
    """An answer to a run that waits for something else than an approval (a second
    ``tether approve`` after the approval was answered and the agent went on to a tool
    that is a child run) said "it is waiting and has not asked for one", untrue of a run
    that asked a moment before: it names what the run waits for."""
    app = App(sqlite_url)

    @app.workflow(name="gated")
    async def gated() -> object:
        await tether.ai.request_approval("pay", {"amount": 5}, "small", approval_id="a")
        tether.set_status({"state": "paying"})  # (as an agent says it calls its tools)
        return await tether.wait_for_signal("go")

    async with app, app.worker(poll_interval=0.05):
        await app.start(gated, run_id="g-1")
        for _ in range(600):
            if await pending_approval(app, "g-1") is not None:
                break
            await asyncio.sleep(0.05)
        await approve(app, "g-1")
        for _ in range(600):
            if (await app.get_run("g-1")).waiting_for == "signal go":
                break
            await asyncio.sleep(0.05)
        with pytest.raises(NoPendingApproval) as caught:
            await approve(app, "g-1")
        assert str(caught.value) == ("run 'g-1' has no pending approval: it is waiting for "
                                     "signal go, not for an approval")
        await app.cancel("g-1")


async def test_request_approval_in_a_plain_workflow(store_url: str) -> None:
    """Any workflow can ask for approval; a stale answer (another approval's id) and a
    malformed payload are skipped, a hand-sent answer without an id is taken."""
    app = App(store_url)

    @app.workflow
    async def deploy(service: str) -> list[Any]:
        decisions = []
        for i in range(2):
            decision = await request_approval(
                "deploy", {"service": service}, f"release {i} of {service}",
                approval_id=f"deploy-{i}", status={"agent": "deployer"})
            decisions.append([decision.approved, decision.note])
        return decisions

    async with app, app.worker():
        handle = await app.start(deploy, "api", run_id="dep-1")
        first = await next_pending(app)
        assert (first.agent, first.tool, first.reason) == ("deployer", "deploy",
                                                           "release 0 of api")
        await app.signal("dep-1", "approval", {"approved": True, "approval_id": "old"})
        await app.signal("dep-1", "approval", {"approve": "yes"})
        await app.signal("dep-1", "approval", {"approved": False, "note": "by hand"})
        second = await next_pending(app, after=first)
        assert second.approval_id == "deploy-1"
        await approve(app, "dep-1")
        assert await handle.result(timeout=20) == [[False, "by hand"], [True, None]]
        info = await app.get_run("dep-1")
    assert [e["kind"] for e in info.journal].count("signal") == 4


async def _waiting_for(app: App, run_id: str, what: str) -> None:
    """Wait until ``run_id`` is released waiting for ``what`` (its writes flushed)."""
    async with asyncio.timeout(20):
        while (await app.get_run(run_id)).waiting_for != what:
            await asyncio.sleep(0.02)


async def _seen_status(app: App, http: httpx.AsyncClient, url: str, run_id: str
                       ) -> list[Any]:
    """The run's live status as ``tether show --json``, the API's run document and
    ``App.get_run`` give it (one each)."""
    shown = await asyncio.to_thread(tether_cli, "show", run_id, "--json", db=url)
    assert shown.returncode == 0, shown.stderr
    doc = (await http.get(f"/api/v1/runs/{run_id}")).json()
    return [json.loads(shown.stdout)["status_info"], doc["status_info"],
            (await app.get_run(run_id)).status_info]


async def test_a_plain_workflow_is_not_awaiting_an_approval_once_answered(
        store_url: str) -> None:
    """A workflow's own ``request_approval``, answered, leaves the run's live status as
    the caller gave it (``status=``; ``None`` without): ``tether show --json``, the API
    and ``App.get_run`` said ``awaiting_approval`` while the run went on, and after it
    ended. ``pending_approvals()`` lists nothing meanwhile; approved, then rejected with
    a note."""
    from tether.serve import create_app

    app = App(store_url)

    @app.workflow
    async def release(service: str) -> list[Any]:
        first = await request_approval("deploy", {"service": service}, "ship it",
                                       approval_id="r-1", status={"phase": "release"})
        await tether.wait_for_signal("go")
        second = await request_approval("rollback", {"service": service}, "undo it",
                                        approval_id="r-2")
        await tether.wait_for_signal("go")
        return [[first.approved, first.note], [second.approved, second.note]]

    asgi = create_app(app, tokens=None, mcp=False, metrics_interval=0)
    async with app, app.worker(), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=asgi), base_url="http://127.0.0.1") as http:
        handle = await app.start(release, "api", run_id="rel-1")
        first = await next_pending(app)
        asking = await _seen_status(app, http, store_url, "rel-1")
        assert [s["state"] for s in asking] == ["awaiting_approval"] * 3, asking
        await approve(app, "rel-1", approval_id=first.approval_id)
        await _waiting_for(app, "rel-1", "signal go")
        assert await _seen_status(app, http, store_url, "rel-1") == [
            {"phase": "release"}] * 3
        assert await pending_approvals(app) == []
        await app.signal("rel-1", "go")
        second = await next_pending(app, after=first)
        assert (second.tool, second.approval_id) == ("rollback", "r-2")
        await reject(app, "rel-1", note="not on a Friday")
        await _waiting_for(app, "rel-1", "signal go")
        assert await _seen_status(app, http, store_url, "rel-1") == [None] * 3
        assert await pending_approvals(app) == []
        await app.signal("rel-1", "go")
        assert await handle.result(timeout=20) == [[True, None],
                                                   [False, "not on a Friday"]]
        assert await _seen_status(app, http, store_url, "rel-1") == [None] * 3


@pytest.mark.postgres
@pytest.mark.parametrize("ahead", [False, True], ids=["answered-in-turn", "answered-ahead"])
async def test_approval_status_writes_land_in_order(pg_migrated_url: str,
                                                    ahead: bool) -> None:
    """Forty approvals in a row on PostgreSQL, a real worker: each asks, then its answer
    sets the status back (``{"asked": i}``). Status writes travel on pooled connections;
    watched all along, the status never goes back (approval i, its answer, approval
    i + 1, ...), and the run ends with the last answer's status, not an approval.
    ``ahead``: every answer is sent before the run asks (one execution takes them all:
    its writes follow each other closest); else each is sent once its approval shows."""
    app = App(pg_migrated_url)
    count = 40

    @app.workflow
    async def many(n: int) -> int:
        approved = 0
        for i in range(n):
            decision = await request_approval("step", {"i": i}, "go on",
                                              approval_id=f"a-{i}", status={"asked": i})
            approved += decision.approved
        return approved

    def order(info: Any) -> int:
        """Where a status comes in the run's sequence: approval i's ask 2i, its answer
        2i + 1 (None: not yet written, -1)."""
        if info is None:
            return -1
        if info.get("state") == "awaiting_approval":
            return 2 * int(info["approval"]["id"].removeprefix("a-"))
        return 2 * int(info["asked"]) + 1

    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(order((await app.get_run("many-1")).status_info))
            await asyncio.sleep(0)

    async with app:
        handle = await app.start(many, count, run_id="many-1")
        for i in range(count if ahead else 0):  # (before a worker takes the run)
            await app.signal("many-1", "approval", {"approved": True, "note": None,
                                                     "approval_id": f"a-{i}"})
        watcher = asyncio.create_task(watch())
        async with app.worker():
            asked: PendingApproval | None = None
            for i in range(0 if ahead else count):
                asked = await next_pending(app, after=asked)
                assert asked.approval_id == f"a-{i}"
                await approve(app, "many-1", approval_id=asked.approval_id)
            assert await handle.result(timeout=60) == count
        done.set()
        await watcher
        final = (await app.get_run("many-1")).status_info
    assert final == {"asked": count - 1}
    assert seen == sorted(seen), seen
    assert len(set(seen)) > 1


async def test_approvals_of_a_run_that_continued_as_new(store_url: str) -> None:
    """A run that continues as new asks again under an approval id an earlier generation
    used (each generation's first approval is "step-0"): the answer counts. Its
    idempotency key was ``approval:step-0`` in every generation, so the second answer
    was dropped as a repeat of the first generation's (``NoPendingApproval``, "answered
    already") and the run waited for ever."""
    app = App(store_url)

    @app.workflow
    async def rounds(done: list[bool]) -> list[bool]:
        if len(done) == 2:
            return done
        decision = await request_approval("ship", {"round": len(done)}, "ship it",
                                          approval_id="step-0")
        tether.continue_as_new([*done, decision.approved])

    async with app, app.worker():
        handle = await app.start(rounds, [], run_id="can-1")
        for i, answer in enumerate((True, False)):
            deadline = time.monotonic() + 20
            while not [p for p in await pending_approvals(app)
                       if p.arguments == {"round": i}]:
                assert time.monotonic() < deadline, f"approval {i} never pending"
                await asyncio.sleep(0.02)
            await approve(app, "can-1", approved=answer)
        assert await handle.result(timeout=20) == [True, False]


# -- the commands ----------------------------------------------------------------------------


def tether_cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return forked.run([sys.executable, "-m", "tether", *args, "--db", db],
                      capture_output=True, text=True, timeout=60)


async def test_cli_lists_and_answers_approvals(tmp_path: Path, server: ScriptedLLMServer,
                                               llm: LLM) -> None:
    """``tether approvals [--json]`` lists what waits; ``tether approve RUN_ID --reject
    --note`` and ``tether approve RUN_ID [--approval-id ID]`` answer; errors are one
    line and non-zero."""
    db = f"sqlite:///{tmp_path}/cli.db"
    booked: list[dict[str, Any]] = []
    app = booking_app(db, llm, booked)
    booking_script(server)
    async with app, app.worker():
        done = await asyncio.to_thread(tether_cli, "approvals", db=db)
        assert (done.returncode, done.stdout) == (0, "no pending approvals\n")
        handle = await app.start("travel", "Book me a cheap flight", run_id="trip-cli")
        first = await next_pending(app)

        listed = await asyncio.to_thread(tether_cli, "approvals", "--json", db=db)
        assert listed.returncode == 0, listed.stderr
        (row,) = json.loads(listed.stdout)
        assert {k: row[k] for k in ("run_id", "agent", "tool", "arguments", "reason")} == {
            "run_id": "trip-cli", "agent": "travel", "tool": "book_flight",
            "arguments": {"destination": "Rome", "price_usd": 420.0},
            "reason": "Rome is cheapest, I want to book it."}
        assert isinstance(row["since"], float)
        table = await asyncio.to_thread(tether_cli, "approvals", db=db)
        assert "trip-cli" in table.stdout and "book_flight" in table.stdout
        assert "reason: Rome is cheapest" in table.stdout

        rejected = await asyncio.to_thread(tether_cli, "approve", "trip-cli", "--reject",
                                           "--note", "too expensive", db=db)
        assert rejected.returncode == 0, rejected.stderr
        assert rejected.stdout.startswith("trip-cli: rejected book_flight")
        second = await next_pending(app, after=first)
        # ``--approval-id`` answers the approval a person was shown, or none: the first
        # one's id, now that the agent asks again, sends nothing (exit 1, saying which).
        stale = await asyncio.to_thread(tether_cli, "approve", "trip-cli", "--approval-id",
                                        first.approval_id, db=db)
        assert stale.returncode == 1, stale.stderr
        assert (f"approval {first.approval_id} was answered already; the run now waits "
                f"for approval {second.approval_id}") in stale.stderr
        # An id the run never had was called "answered already" too (until 2026-12-06).
        never = await asyncio.to_thread(tether_cli, "approve", "trip-cli", "--approval-id",
                                        "other", db=db)
        assert never.returncode == 1, never.stderr
        assert never.stderr.strip() == (
            "tether: error: run 'trip-cli' has no pending approval 'other': it never asked "
            f"for one with that id; it waits for approval {second.approval_id} "
            "(book_flight), which this answer was not meant for; nothing was sent")
        # An id the run has not reached yet (a later call of this turn, a later turn)
        # was said to be one it "never asked for" (until 2026-12-08).
        turn, call = (int(n) for n in second.approval_id.split("."))
        for later in (f"{turn}.{call + 1}", f"{turn + 1}.0"):
            early = await asyncio.to_thread(tether_cli, "approve", "trip-cli",
                                            "--approval-id", later, db=db)
            assert early.returncode == 1, early.stderr
            assert early.stderr.strip() == (
                f"tether: error: run 'trip-cli' has no pending approval '{later}': it has "
                f"not asked for it yet; it waits for approval {second.approval_id} "
                "(book_flight) now, which this answer was not meant for; nothing was sent "
                "(answer it once the run asks for it)")
        blank = await asyncio.to_thread(tether_cli, "approve", "trip-cli", "--approval-id",
                                        "", db=db)
        assert blank.returncode == 2 and "--approval-id is empty" in blank.stderr
        approved = await asyncio.to_thread(tether_cli, "approve", "trip-cli", "--approval-id",
                                           second.approval_id, db=db)
        assert approved.returncode == 0, approved.stderr
        await handle.result(timeout=20)

        again = await asyncio.to_thread(tether_cli, "approve", "trip-cli", db=db)
        assert again.returncode == 1
        assert again.stderr.strip() == ("tether: error: run 'trip-cli' has no pending "
                                        "approval: it has ended (completed)")
        unknown = await asyncio.to_thread(tether_cli, "approve", "nope", db=db)
        assert (unknown.returncode, unknown.stderr.strip()) == (
            1, "tether: error: no run with id 'nope'")
        empty = await asyncio.to_thread(tether_cli, "approve", "trip-cli", "--note", " ", db=db)
        assert empty.returncode == 2 and "--note is empty" in empty.stderr
    assert tool_messages(server.requests[1]) == ["rejected by a human: too expensive"]
    assert booked == [{"destination": "Lisbon", "price_usd": 180.0}]


async def test_an_answered_approval_awaiting_a_worker(store_url: str,
                                                     server: ScriptedLLMServer,
                                                     llm: LLM) -> None:
    """An approval answered while no worker runs: its run stays ``waiting``, its status
    naming the approval, until a worker claims it. ``pending_approvals`` (the API,
    ``tether approvals --json``) lists it with ``awaiting_worker`` and ``answered``
    true; ``tether approvals``' table leaves it out, as the web inbox does (before, it
    listed it as pending, and an answer to it was refused). ``tether runs`` and ``tether
    show`` say it was answered and waits for a worker (they said the approval was
    awaited, and show gave the command that answers it)."""
    booked: list[dict[str, Any]] = []
    app = booking_app(store_url, llm, booked)
    booking_script(server)
    async with app:
        async with app.worker():
            handle = await app.start("travel", "Book me a cheap flight", run_id="trip-aw")
            first = await next_pending(app)
        assert not first.awaiting_worker
        await approve(app, "trip-aw")
        assert (await app.store.run_get("trip-aw")).status == "waiting"
        words = "approval of book_flight answered (approved), waiting for a worker"
        runs = await asyncio.to_thread(tether_cli, "runs", db=store_url)
        assert runs.returncode == 0, runs.stderr
        (row,) = [line for line in runs.stdout.splitlines() if "trip-aw" in line]
        assert row.endswith(words), runs.stdout
        show = await asyncio.to_thread(tether_cli, "show", "trip-aw", db=store_url)
        assert show.returncode == 0, show.stderr
        assert f"waiting for: {words} (since " in show.stdout, show.stdout
        assert "tether approve" not in show.stdout, show.stdout
        (listed,) = await pending_approvals(app)
        assert listed.awaiting_worker and listed.approval_id == first.approval_id
        assert listed.answered
        page, _ = await pending_approvals_page(app, limit=5)
        assert [(p.awaiting_worker, p.answered) for p in page] == [(True, True)]
        with pytest.raises(NoPendingApproval, match="answered already"):
            await approve(app, "trip-aw")
        as_json = await asyncio.to_thread(tether_cli, "approvals", "--json", db=store_url)
        assert as_json.returncode == 0, as_json.stderr
        assert [(r["run_id"], r["awaiting_worker"], r["answered"])
                for r in json.loads(as_json.stdout)] == [("trip-aw", True, True)]
        for limit in ((), ("--limit", "5")):
            table = await asyncio.to_thread(tether_cli, "approvals", *limit, db=store_url)
            assert (table.returncode, table.stdout) == (0, "no pending approvals\n"), table
        async with app.worker():
            second = await next_pending(app, after=first)
            assert not second.awaiting_worker
            await approve(app, "trip-aw")
            assert await handle.result(timeout=20) == "Booked Lisbon."
    assert booked == [{"destination": "Rome", "price_usd": 420.0},
                      {"destination": "Lisbon", "price_usd": 180.0}]


async def _claimable(app: App, run_id: str) -> None:
    """Wait until ``run_id``, waiting, is claimable (its wait's timeout passed)."""
    async with asyncio.timeout(20):
        while True:
            run = await app.store.run_get(run_id)
            if run.status == "waiting" and run.available_at is not None \
                    and run.available_at <= app.clock.now():
                return
            await asyncio.sleep(0.05)


async def test_an_approval_whose_watch_timed_out_may_still_be_answered(
        store_url: str) -> None:
    """A watched approval wait (``tether.ai.mcp``'s) times out, unanswered, while no
    worker runs: its run is claimable (``awaiting_worker``), but nobody answered it.
    ``tether approvals``' table lists it (it left it out, as if answered, until a worker
    took the run), ``--json`` says ``"answered": false``, ``tether runs`` and ``tether
    show`` say it is awaited, and an answer is taken. Answered, it leaves the table; an
    ``approval`` signal that answers nothing (no ``approved``, another approval's id)
    does not make it answered."""
    app = App(store_url)

    async def nothing() -> None:
        return None

    @app.workflow
    async def deploy(service: str) -> bool:
        decision = await request_approval("deploy", {"service": service}, "a release",
                                          approval_id="d-1", watch=nothing,
                                          watch_every=0.2)
        return decision.approved

    async with app:
        async with app.worker():
            handle = await app.start(deploy, "api", run_id="watched")
            await next_pending(app)
        await _claimable(app, "watched")
        for limit in ((), ("--limit", "5")):
            table = await asyncio.to_thread(tether_cli, "approvals", *limit, db=store_url)
            assert table.returncode == 0, table.stderr
            assert "watched" in table.stdout and "deploy" in table.stdout, table.stdout
        as_json = await asyncio.to_thread(tether_cli, "approvals", "--json", db=store_url)
        assert [(r["run_id"], r["awaiting_worker"], r["answered"])
                for r in json.loads(as_json.stdout)] == [("watched", True, False)]
        (listed,) = await pending_approvals(app)
        assert (listed.run_id, listed.awaiting_worker, listed.answered) == (
            "watched", True, False)
        runs = await asyncio.to_thread(tether_cli, "runs", db=store_url)
        (row,) = [line for line in runs.stdout.splitlines() if "watched" in line]
        assert row.endswith("approval of deploy"), runs.stdout
        show = await asyncio.to_thread(tether_cli, "show", "watched", db=store_url)
        assert "waiting for: approval of deploy (since " in show.stdout, show.stdout
        assert "answer: tether approve watched --approval-id d-1" in show.stdout
        # (a signal that answers nothing, which the run will skip, is no answer either)
        await app.signal("watched", "approval", {"approve": "yes"})
        await app.signal("watched", "approval", {"approved": True, "approval_id": "old"})
        (listed,) = await pending_approvals(app)
        assert (listed.awaiting_worker, listed.answered) == (True, False)

        answered = await asyncio.to_thread(tether_cli, "approve", "watched", "--reject",
                                           db=store_url)
        assert answered.returncode == 0, answered.stderr
        (listed,) = await pending_approvals(app)
        assert (listed.awaiting_worker, listed.answered) == (True, True)
        table = await asyncio.to_thread(tether_cli, "approvals", db=store_url)
        assert table.stdout == "no pending approvals\n", table.stdout
        show = await asyncio.to_thread(tether_cli, "show", "watched", db=store_url)
        assert ("waiting for: approval of deploy answered (rejected), waiting for a "
                "worker") in show.stdout, show.stdout
        async with app.worker():
            assert await handle.result(timeout=20) is False


async def test_approvals_into_a_pipe_prints_every_value_whole(store_url: str) -> None:
    """``tether approvals | cat`` prints a long agent, tool, arguments and reason whole,
    as ``tether runs`` and ``versions`` print their cells there (each column as wide as
    its longest cell); until 2026-12-07 they were cut at 16, 18, 60 and 100 characters.
    The table of short values reads as it did."""
    app = App(store_url)
    agent, tool = "research-assistant-for-travel", "book_flight_with_loyalty_points"
    arguments = {"destination": "Rome", "travellers": ["Ada", "Grace", "Barbara"],
                 "price_usd": 420.0, "notes": "an aisle seat, away from the galley"}
    reason = "Rome is cheapest in May; " * 6

    @app.workflow
    async def travel() -> bool:
        decision = await request_approval(tool, arguments, reason, approval_id="t-1",
                                          status={"agent": agent})
        return decision.approved

    @app.workflow
    async def short_one() -> bool:
        return (await request_approval("ok", {"a": 1}, "why", approval_id="s-1")).approved

    async with app:
        async with app.worker():
            await app.start(travel, run_id="long-1")
            await next_pending(app)
            await app.start(short_one, run_id="short-1")
            while len(await pending_approvals(app)) < 2:
                await asyncio.sleep(0.05)
        table = await asyncio.to_thread(tether_cli, "approvals", db=store_url)
    assert table.returncode == 0, table.stderr
    head, *lines = table.stdout.splitlines()
    (row,) = [line for line in lines if line.startswith("long-1 ")]
    assert agent in row and tool in row, table.stdout
    assert row.endswith(json.dumps(arguments)), table.stdout
    assert f"reason: {reason.strip()}" in table.stdout, table.stdout
    assert "…" not in table.stdout, table.stdout
    # (every row's columns under the heading's: the arguments start where it says)
    (short_row,) = [line for line in lines if line.startswith("short-1 ")]
    start = head.index("ARGUMENTS")
    assert row[start:] == json.dumps(arguments) and short_row[start:] == '{"a": 1}', \
        table.stdout
    assert head.index("TOOL") == row.index(tool) == short_row.index("ok "), table.stdout


def test_pending_approval_shape() -> None:
    """to_dict() is the ``--json`` row: every field, JSON types."""
    p = PendingApproval("r", "a", "t", {"x": 1}, "why", 1.5, "1.0", "call_1")
    assert json.loads(json.dumps(p.to_dict())) == {
        "run_id": "r", "agent": "a", "tool": "t", "arguments": {"x": 1}, "reason": "why",
        "since": 1.5, "approval_id": "1.0", "call_id": "call_1", "awaiting_worker": False,
        "answered": False}
    assert tether.ai.APPROVAL_SIGNAL == "approval"


@pytest.mark.postgres
async def test_cli_says_how_long_an_approval_waited_by_the_servers_clock(
        pg_url: str, tmp_path: Path) -> None:
    """``since`` is on the PostgreSQL server's clock (the worker's ``SyncedClock``):
    ``tether approvals`` on a host an hour ahead (libfaketime +1h, a real process)
    says the seconds it waited, not "60 min" as it did with the host's clock."""
    from tests import CHECKOUT_PATH
    from tests.chaos.clockjump import faked_env, missing_faketime

    reason = missing_faketime()
    if reason:
        pytest.skip(reason)
    app = App(pg_url)

    @app.workflow
    async def deploy(service: str) -> bool:
        decision = await request_approval("deploy", {"service": service}, "release",
                                          approval_id="skew", status={"agent": "deployer"})
        return decision.approved

    async with app, app.worker():
        handle = await app.start(deploy, "api", run_id="dep-skew")
        await next_pending(app)
        env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "tether", "approvals", "--db", pg_url],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env=dict(env, PYTHONPATH=CHECKOUT_PATH, **faked_env("+1h")))
        assert done.returncode == 0, done.stderr
        (row,) = [line for line in done.stdout.splitlines() if line.startswith("dep-skew")]
        assert re.search(r" deploy +\d{1,2} s ", row), row
        await approve(app, "dep-skew")
        assert await handle.result(timeout=20) is True


async def test_an_old_approval_is_listed_behind_more_waiting_runs_than_a_page(
        store_url: str) -> None:
    """Runs waiting on timers and on other signals, newer than an approval and more of
    them than ``limit``: the approval is still listed (the listing read the newest
    ``limit`` waiting runs and kept the approvals among them, so the oldest approval of
    a large fleet was never listed, and its run waited for ever)."""
    app = App(store_url)

    @app.workflow
    async def ask() -> bool:
        decision = await request_approval("pay", {"amount": 3}, "an invoice",
                                          approval_id="pay-1")
        return decision.approved

    @app.workflow
    async def nap(i: int) -> int:
        if i % 2:
            await tether.sleep(3600)
        else:
            await tether.wait_for_signal("go")
        return i

    async with app, app.worker(concurrency=8):
        handle = await app.start(ask, run_id="old-ask")
        await next_pending(app)
        naps = [await app.start(nap, i) for i in range(6)]
        deadline = time.monotonic() + 20
        while (len(await app.list_runs(status=RunStatus.WAITING, limit=100)) < 7
               and time.monotonic() < deadline):
            await asyncio.sleep(0.05)
        assert len(await app.list_runs(status=RunStatus.WAITING, limit=100)) == 7
        for limit in (1, 5, None):
            found = await pending_approvals(app, limit=limit)
            assert [(p.run_id, p.tool, p.arguments) for p in found] == [
                ("old-ask", "pay", {"amount": 3})]
        await approve(app, "old-ask")
        assert await handle.result(timeout=20) is True
        for n in naps:
            await app.cancel(n.run_id)


async def test_approvals_page_by_page_and_the_cli_limit(store_url: str) -> None:
    """``pending_approvals_page`` lists the approvals by their run's age, ``limit`` at a
    time, and its cursor continues exactly where the page ended; ``tether approvals
    --limit N`` lists the oldest runs' N and says on stderr when more wait."""
    app = App(store_url)

    @app.workflow
    async def ask(i: int) -> bool:
        decision = await request_approval("pay", {"invoice": i}, f"invoice {i}",
                                          approval_id=f"pay-{i}")
        return decision.approved

    ids = [f"ask-{i}" for i in range(5)]
    async with app, app.worker(concurrency=8):
        handles = [await app.start(ask, i, run_id=run_id) for i, run_id in enumerate(ids)]
        deadline = time.monotonic() + 20
        while len(await pending_approvals(app)) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for limit in (1, 2, 4, 5, 50):
            seen: list[tuple[str, Any]] = []
            after: tuple[float, str] | None = None
            pages = 0
            while True:
                page, after = await pending_approvals_page(app, limit=limit, after=after)
                pages += 1
                assert 0 < len(page) <= limit
                seen += [(p.run_id, p.arguments["invoice"]) for p in page]
                if after is None:
                    break
            assert seen == [(run_id, i) for i, run_id in enumerate(ids)], limit
            assert pages == -(-5 // limit)
        with pytest.raises(ValueError):
            await pending_approvals_page(app, limit=0)

        two = await asyncio.to_thread(tether_cli, "approvals", "--limit", "2", "--json",
                                      db=store_url)
        assert two.returncode == 0, two.stderr
        assert [row["run_id"] for row in json.loads(two.stdout)] == ids[:2]
        assert "more approvals wait than the 2 listed" in two.stderr
        table = await asyncio.to_thread(tether_cli, "approvals", "--limit", "5", db=store_url)
        assert table.returncode == 0 and table.stderr == "", table.stderr
        assert [line.split()[0] for line in table.stdout.splitlines()[1:]
                if line.startswith("ask-")] == ids
        for run_id in ids:
            await approve(app, run_id)
        assert [await h.result(timeout=20) for h in handles] == [True] * 5
