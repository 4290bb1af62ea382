"""``tether show`` and ``tether runs`` on a terminal: fitted to its width (``$COLUMNS``),
long cells cut, every run id a person copies still whole somewhere; ``--wide``, and
any output that is not a terminal, print the lines a pipe gets, as before.

The commands run on a real pseudo-terminal: a pipe is not a terminal, and what a pipe
gets must not change (scripts read it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import pty
import re
import subprocess
import sys
from typing import Any

import pytest

import tether
from tests import forked
from tests.cli.test_cli import tether_cli
from tether import App, RetryPolicy, RunFailed
from tether._fit import columns, cut_end, cut_middle, pack, wrap
from tether.store._port import WorkerInfo

PARENT = "order-7f3a9c2e-41d2-4b8e-9c1a-2f6e8d0b5a17"
#: A child id longer than an 80-column line leaves room for, once it is a cell.
LONG_CHILD = "customer-onboarding-2024-11-research-subagent-7f3a9c1b-e5d4-4c3b"
STEP = "inventory.reserve_items_for_customer_order_with_warehouse_fallback"
FAILING = "billing-7f3a9c2e-41d2-4b8e-9c1a-2f6e8d0b5a17"
MESSAGE = ("payment gateway https://payments.example.com/v2/charges timed out after 30 s "
           "while charging 4999 cents for order 7f3a9c2e; the card was not charged")


def on_terminal(*args: str, db: str, columns: int) -> str:
    """What ``tether ARGS`` prints on a terminal ``columns`` wide (a pseudo-terminal,
    its width in ``$COLUMNS`` as a shell exports it)."""
    return terminal_output([sys.executable, "-m", "tether", *args, "--db", db], columns)


def terminal_output(argv: list[str], columns: int, *, drop: tuple[str, ...] = (),
                    cwd: str | None = None) -> str:
    """What ``argv`` prints on a terminal ``columns`` wide, without the environment
    variables ``drop`` (nor ``TETHER_DATABASE_URL``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TETHER_DATABASE_URL", *drop)}
    env["COLUMNS"] = str(columns)
    leader, follower = pty.openpty()
    try:
        proc = forked.Popen(argv, stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=subprocess.PIPE, env=env, cwd=cwd)
    finally:
        os.close(follower)
    out = read_all(leader)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return out.decode().replace("\r\n", "\n")  # (the terminal's own line ends)


def read_all(leader: int) -> bytes:
    """What a command writes to the terminal whose leader end is ``leader``, until it
    closes it (the leader is closed after)."""
    got = b""
    try:
        while True:
            try:
                data = os.read(leader, 1 << 16)
            except OSError:  # (Linux: EIO once the command has closed the terminal)
                break
            if not data:
                break
            got += data
    finally:
        os.close(leader)
    return got


def make_runs(url: str) -> None:
    """A parent with a long step name, a long-named child and a signal; a run whose
    step failed three times with a long message."""
    app = App(url)

    @app.step(name=STEP)
    async def reserve(order: str) -> dict[str, object]:
        return {"order": order, "warehouse": "eu-west-1-fulfilment-center-07"}

    @app.step(retry=RetryPolicy(max_attempts=3, initial_interval=0.01))
    async def charge() -> None:
        raise ConnectionError(MESSAGE)

    @app.workflow
    async def shipment(n: int) -> str:
        return f"shipped parcel {n} with the express carrier, signature required"

    @app.workflow
    async def order() -> list[str]:
        await reserve(PARENT)
        first = await tether.call(shipment, 1)  # its id: PARENT.1
        other = await tether.start_child(shipment, 2, run_id=LONG_CHILD)
        said = await tether.wait_for_signal("approve")
        return [first, await other.result(), str(said)]

    @app.workflow
    async def billing() -> None:
        await charge()

    async def run() -> None:
        async with app, app.worker(poll_interval=0.05):
            handle = await app.start(order, run_id=PARENT)
            await app.signal(PARENT, "approve", {"by": "ana", "note": "ship it " * 20})
            await handle.result(timeout=30)
            with pytest.raises(RunFailed):
                await (await app.start(billing, run_id=FAILING)).result(timeout=30)

    asyncio.run(run())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('fit')}/fit.db"
    make_runs(url)
    return url


def long_lines(text: str, width: int) -> list[str]:
    return [line for line in text.splitlines() if len(line) > width]


def test_show_fits_80_columns_and_keeps_the_ids_whole(store: str) -> None:
    shown = on_terminal("show", PARENT, db=store, columns=80)
    assert long_lines(shown, 80) == [], shown
    lines = shown.splitlines()
    assert lines[0] == f"run {PARENT}", shown  # the id, whole, on a line of its own
    # No room for the outcome beside each row: it is on the line under it.
    head = lines.index(next(line for line in lines if line.startswith("POS")))
    assert lines[head + 1].strip() == "→ RESULT / ERROR", shown
    # The long step name is cut in its middle; so are the child ids in the NAME column,
    # which are listed whole under the table. A child id the outcome's line has room
    # for is whole there.
    assert STEP not in shown and f"{STEP[:12]}" in shown, shown
    row = next(line for line in lines if STEP[:12] in line)
    assert "…" in row and row.split()[2].endswith(STEP[-12:]), shown
    listed = lines[lines.index("child runs (ids in full):") + 1:]
    listed = listed[:listed.index("")]
    assert {line.split()[1] for line in listed} == {f"{PARENT}.1", LONG_CHILD}, shown
    assert f"     → {LONG_CHILD}" in lines and f"     → {PARENT}.1" in lines, shown
    assert "result: " in shown


def test_show_fits_120_columns_on_one_line_a_row(store: str) -> None:
    shown = on_terminal("show", FAILING, db=store, columns=120)
    assert long_lines(shown, 120) == [], shown
    lines = shown.splitlines()
    assert lines[0].startswith(f"run {FAILING}  workflow billing"), shown
    head = next(line for line in lines if line.startswith("POS"))
    assert head.endswith("RESULT / ERROR"), shown
    row = next(line for line in lines if line.lstrip().startswith("0  step"))
    assert "error" in row and "ConnectionError: payment gateway" in row, shown
    assert row.endswith("…"), shown
    # Every attempt names its worker whole; the run's error is wrapped, not cut.
    attempts = lines[lines.index("attempts:") + 2:][:3]
    assert [line.split()[2] for line in attempts] == ["#1", "#2", "#3"], shown
    assert all(re.search(r"  [\w.-]+:\d+:[0-9a-f]+  ConnectionError", line)
               for line in attempts), shown
    failed, _, origin = shown[shown.index("\nfailed: ") + 1:].partition("\n  at ")
    assert " ".join(failed.split()) == f"failed: ConnectionError: {MESSAGE}", shown
    # (then where it was raised: the step's line, tests/cli/test_show_origin.py)
    assert "in charge: raise ConnectionError(MESSAGE)" in " ".join(origin.split()), shown


@pytest.mark.parametrize("command", [("show", PARENT), ("show", FAILING), ("runs",)])
def test_wide_and_a_pipe_print_every_cell_as_before(store: str,
                                                    command: tuple[str, ...]) -> None:
    """``--wide`` on a terminal prints what a pipe gets: lines as long as their cells."""
    wide = on_terminal(*command, "--wide", db=store, columns=80)
    piped = tether_cli(*command, db=store)
    assert piped.returncode == 0, piped.stderr
    assert wide == piped.stdout
    assert long_lines(wide, 100), wide


def test_runs_fits_80_columns_and_never_cuts_a_run_id(store: str) -> None:
    listed = on_terminal("runs", db=store, columns=80)
    ids = {PARENT, f"{PARENT}.1", LONG_CHILD, FAILING}
    lines = listed.splitlines()
    assert lines[0].split() == ["RUN", "ID", "WORKFLOW", "QUEUE", "STATUS", "CREATED",
                                "WAITING", "FOR"], listed
    assert long_lines(listed, 80) == [], listed
    # Each id whole at the start of a line: on its row, or above it when longer than
    # the column (the row's cells then start under their headings).
    starts = [line.split()[0] for line in lines[1:] if not line.startswith(" ")]
    assert sorted(starts) == sorted(ids), listed
    column = lines[0].index("WORKFLOW")
    for above, line in itertools.pairwise(lines):
        if line.startswith(" "):
            assert len(above) > column and above.split() == [above.strip()], listed
            assert line[:column].strip() == "" and line[column] != " ", listed
    assert "…" not in listed, listed


def test_runs_heading_fits_a_narrow_terminal_when_no_run_waits(store: str) -> None:
    """On a 60-column terminal ``tether runs`` fitted its rows but not its heading:
    WAITING FOR, a title no cell needed (no run of the store waits), took the heading
    to 68 columns, wrapped onto a second line. Now the table leaves that column out
    then, and no line is longer than the terminal but an id kept whole."""
    listed = on_terminal("runs", db=store, columns=60)
    lines = listed.splitlines()
    assert lines[0].split() == ["RUN", "ID", "WORKFLOW", "QUEUE", "STATUS", "CREATED"], listed
    assert [line for line in long_lines(listed, 60)
            if line not in (PARENT, f"{PARENT}.1", LONG_CHILD, FAILING)] == [], listed


@pytest.mark.parametrize("width", [61, 55, 45, 40])
def test_runs_fits_a_narrow_terminal_when_a_run_waits(desk: str, width: int) -> None:
    """Under 62 columns, a run that waits took ``tether runs``' rows past the terminal
    (the wait and the queue cut to their least, 62 columns were left): now what a run
    waits for goes under its row, whole, then the created time loses its year and
    seconds, then (narrower still) the table its CREATED column. No line
    is longer than the terminal but a run id kept whole."""
    listed = on_terminal("runs", db=desk, columns=width)
    ids = {r["run_id"] for r in json.loads(tether_cli("runs", "--json", db=desk).stdout)}
    assert [line for line in long_lines(listed, width) if line not in ids] == [], listed
    lines = listed.splitlines()
    assert lines[0].split()[:5] == ["RUN", "ID", "WORKFLOW", "QUEUE", "STATUS"], listed
    assert "WAITING FOR" not in lines[0], listed
    waits = [line.strip() for line in lines if line.startswith("  waiting for: ")]
    # (the desk's runs are of a version no live worker has: its queued and waiting
    # runs say so, after what they wait for)
    assert len(waits) == 2, listed
    assert waits[0].startswith("waiting for: no live worker"), listed
    assert waits[1].startswith("waiting for: approval of issue_refund;"), listed
    assert ("CREATED" in lines[0]) == (width > 40), listed  # (40: the least fitted to)


@pytest.mark.parametrize("width", [44, 50, 59])
def test_metrics_wrapped_on_a_narrow_terminal_stay_under_their_values(width: int) -> None:
    """``tether show``'s metrics block on a terminal under 60 columns wrapped a line's
    figures under a third of the width (16 columns at 50), four columns left of where
    the block's values start (20). The figures go on under their column, whole."""
    from tether.cli._show_fit import _metrics

    lines: list[str] = []
    _metrics({"llm.calls": 2, "tokens.input": 280_000, "tokens.output": 30_000,
              "cost.usd": 0.16, "saved.calls": 1, "saved.tokens.input": 120_000,
              "saved.tokens.output": 20_000, "saved.cost.usd": 0.08}, width, lines.append)
    body = "".join(lines).splitlines()[2:]  # (after the blank line and "metrics:")
    assert len(body) > 2, lines  # (wrapped)
    assert all(len(line) <= width for line in body), body
    for line in body:
        assert line.startswith(("  LLM spent:        ", "  saved by replay:  ", " " * 20)), body
        assert line[20] != " ", body
    spent = body[:next(i for i, line in enumerate(body) if line.startswith("  saved"))]
    assert " ".join(line[20:] for line in spent) == (
        "2 calls, 280,000 input + 30,000 output tokens, $0.160000"), body


def test_cutting_cells() -> None:
    assert cut_middle(f"{PARENT}.12", 20) == "order-7f3a…0b5a17.12"
    assert cut_middle("short", 20) == "short" and cut_end("short", 5) == "short"
    assert cut_end("abcdefgh", 5) == "abcd…"
    assert pack(["run a", "workflow b", "queue c"], 18) == ["run a  workflow b", "queue c"]
    assert wrap("one two three four", 12, "x: ") == ["x: one two", "   three", "   four"]
    assert wrap("word " * 40, 20, "x: ", max_lines=2)[-1].endswith("…")


# -- approvals, schedules, queues, versions ---------------------------------------------------

#: A waiting run whose id is longer than the RUN ID column an 80-column line leaves.
WAITER = "refund-request-7f3a9c2e-41d2-4b8e-9c1a-2f6e8d0b5a17-customer-4242"
REFUND = {"order": "7f3a9c2e-41d2-4b8e-9c1a-2f6e8d0b5a17", "amount_cents": 4999,
          "currency": "EUR", "reason_code": "parcel-lost-in-transit",
          "notify": ["ana@example.com", "operations-desk@example.com"]}
WHY = ("The carrier confirmed the parcel is lost in transit; the policy says a lost parcel "
       "is refunded in full, and this refund is above the 40 EUR an agent may grant alone.")
SCHEDULE = "nightly-reconciliation-of-payments-eu-west"
VERSION = "2026.12.05+build.7f3a9c2e41d2.payments-service"


def make_desk(url: str) -> None:
    """A run waiting for a refund's approval (long id, arguments and reason), a schedule
    triggered once (a long name, time zone and last run id), a queue of many workflows,
    runs of a long version in several statuses."""
    from tether.ai import request_approval

    app = App(url, version=VERSION)

    @app.workflow(queue="payments")
    async def refund_customer_order_after_loss() -> bool:
        decision = await request_approval("issue_refund", REFUND, WHY, approval_id="a-0")
        return decision.approved

    @app.schedule("0 3 * * *", timezone="America/Argentina/Buenos_Aires", name=SCHEDULE)
    @app.workflow(queue="payments")
    async def reconcile_payments_for_the_previous_day() -> None:
        return None

    for name in ("capture_authorised_payments", "retry_declined_card_payments",
                 "send_payment_receipts_by_email", "close_settled_payment_batches"):
        app.workflow(name=name, queue="payments")(reconcile_payments_for_the_previous_day)

    @app.workflow
    async def fails() -> None:
        raise ValueError("no")

    async def run() -> None:
        async with app, app.worker(poll_interval=0.05):
            await app.start(refund_customer_order_after_loss, run_id=WAITER)
            with pytest.raises(RunFailed):
                await (await app.start(fails)).result(timeout=30)
            await (await app.start("capture_authorised_payments")).result(timeout=30)
            for _ in range(600):
                if (await app.get_run(WAITER)).status.value == "waiting":
                    break
                await asyncio.sleep(0.05)
        async with App(url) as client:  # (queued: no worker runs it)
            await client.start("send_payment_receipts_by_email")

    asyncio.run(run())
    triggered = tether_cli("schedules", "trigger", SCHEDULE, db=url)
    assert triggered.returncode == 0, triggered.stderr


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('desk')}/desk.db"
    make_desk(url)
    return url


def unwrapped(lines: list[str]) -> str:
    return " ".join(" ".join(lines).split())


def test_approvals_fit_80_columns_with_the_arguments_whole(desk: str) -> None:
    """What an approver reads before answering is whole: the run id (on a line of its
    own: longer than its column), every argument and the reason, wrapped under the row."""
    listed = on_terminal("approvals", db=desk, columns=80)
    assert long_lines(listed, 80) == [], listed
    lines = listed.splitlines()
    assert lines[0].split() == ["RUN", "ID", "AGENT", "TOOL", "WAITING", "SINCE"], listed
    assert lines[1] == WAITER, listed
    # Its cells under their headings (the RUN ID column as wide as the ids it holds).
    column = lines[0].index("AGENT")
    assert column == len("RUN ID ") and lines[2][:column].strip() == "", listed
    agent, tool = lines[2].split()[:2]
    assert agent.startswith("refund_customer_") and agent.endswith("…"), listed
    assert tool == "issue_refund", listed
    assert re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$", lines[2]), listed
    start = lines.index(next(line for line in lines if line.startswith("  arguments: ")))
    end = lines.index(next(line for line in lines if line.startswith("  reason: ")))
    assert unwrapped(lines[start:end]) == f"arguments: {json.dumps(REFUND)}", listed
    assert unwrapped(lines[end:]) == f"reason: {WHY}", listed


def test_approvals_keep_the_arguments_in_their_column_if_they_fit(desk: str) -> None:
    listed = on_terminal("approvals", db=desk, columns=400).splitlines()
    assert listed[0].split()[-1] == "ARGUMENTS" and listed[1].startswith(WAITER + " ")
    assert listed[1].endswith(json.dumps(REFUND)), listed
    assert unwrapped(listed[2:]) == f"reason: {WHY}", listed


def test_schedules_fit_80_columns_with_names_and_run_ids_whole(desk: str) -> None:
    for args in (("schedules",), ("schedules", "list")):
        listed = on_terminal(*args, db=desk, columns=80)
        assert long_lines(listed, 80) == [], listed
        lines = listed.splitlines()
        assert lines[0].split() == ["NAME", "WORKFLOW", "CRON", "TZ", "STATE", "NEXT",
                                    "TICK"], listed
        assert lines[1] == SCHEDULE, listed  # a name longer than its column: a line to itself
        assert lines[2].split()[-3:-1] == ["active", lines[2].split()[-2]], listed
        assert re.search(r"active \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$", lines[2]), listed
        assert re.fullmatch(rf"  last run: {SCHEDULE}@manual-[0-9a-f]+", lines[3]), listed


@pytest.mark.parametrize("command", [("approvals",), ("schedules",), ("schedules", "list"),
                                     ("queues",), ("versions",)])
def test_wide_prints_what_a_pipe_gets(desk: str, command: tuple[str, ...]) -> None:
    """``--wide`` on a terminal, and a pipe, print the lines these commands always have
    (wider than 80 columns here)."""
    wide = on_terminal(*command, "--wide", db=desk, columns=80)
    piped = tether_cli(*command, db=desk)
    assert piped.returncode == 0, piped.stderr
    assert waited(wide) == waited(piped.stdout)
    assert long_lines(wide, 80 if command[0] in ("approvals", "schedules") else 60), wide


#: Each command's headings whose cells start under them, and those whose cells end under
#: them (right-aligned figures), in the desk's piped tables.
PIPED_HEADINGS = {"runs": (("WORKFLOW", "QUEUE", "STATUS", "CREATED"), ()),
                  "approvals": (("AGENT", "TOOL", "SINCE", "ARGUMENTS"), ("WAITING",)),
                  "versions": (("BY STATUS",), ("RUNS", "WORKERS"))}


@pytest.mark.parametrize("command", sorted(PIPED_HEADINGS))
def test_a_pipe_keeps_each_cell_under_its_heading_beside_a_long_id(
        desk: str, command: str) -> None:
    """Into a pipe (and with ``--wide``) ``tether runs`` and ``approvals`` kept a 34-
    character RUN ID column and ``versions`` a 24-character VERSION column: the desk's
    run id of 67 characters, workflow of 39 and version of 47 pushed the rest of their
    row out of line with the heading (an approval's reason too). Each column is as wide
    as its longest cell; short ones print as they did (``test_cli``'s tables)."""
    piped = tether_cli(command, db=desk)
    assert piped.returncode == 0, piped.stderr
    header, *rows = piped.stdout.splitlines()
    starts, ends = PIPED_HEADINGS[command]
    assert len(rows) >= 2, piped.stdout
    for row in rows:
        if row.lstrip().startswith("reason: "):  # (an approval's reason, under AGENT)
            assert row.index("reason: ") == header.index("AGENT"), piped.stdout
            continue
        for title in starts:
            at = header.index(title)
            assert row[at - 1] == " " and row[at] != " ", (title, piped.stdout)
        for title in ends:
            at = header.index(title) + len(title)
            assert row[at - 1] != " " and row[at] == " ", (title, piped.stdout)
    assert any(WAITER in row for row in rows) or command == "versions", piped.stdout
    assert any(VERSION in row for row in rows) or command != "versions", piped.stdout


def waited(text: str) -> str:
    """``text`` without approvals' WAITING cells (a second may pass between two runs)."""
    return re.sub(r" +\d+(?:\.\d+)? (?:s|min|h)  ", " (waited)  ", text)


@pytest.mark.parametrize("command", [("queues",), ("versions",)])
def test_queues_and_versions_wrap_their_lists_on_a_narrow_terminal(
        desk: str, command: tuple[str, ...]) -> None:
    """A list (a queue's workflows, a version's counts by status) is wrapped under its
    column: every word still there, no line wider than the terminal."""
    shown = on_terminal(*command, db=desk, columns=60)
    assert long_lines(shown, 60) == [], shown
    piped = tether_cli(*command, db=desk).stdout
    assert shown.split() == piped.split(), shown
    continued = [line for line in shown.splitlines() if line.startswith(" ")]
    assert continued, shown
    if command == ("queues",):
        # Since 2026-12-07 a queue's figures (runs, workers) make its head wider than
        # 60 columns hold beside the workflows: WORKFLOWS heads a line of its own, and
        # each queue's list goes under its row, indented as that heading.
        heading = next(line for line in shown.splitlines() if "WORKFLOWS" in line)
        column = heading.index("WORKFLOWS")
        assert all(len(line) - len(line.lstrip()) == column for line in continued), shown
        # Wide enough for both: the list goes on under its column, beside the figures.
        shown = on_terminal(*command, db=desk, columns=130)
        assert long_lines(shown, 130) == [], shown
        assert shown.split() == piped.split(), shown
        column = shown.splitlines()[0].index("WORKFLOWS")
        continued = [line for line in shown.splitlines() if line.startswith(" ")]
        assert continued, shown
        assert all(len(line) - len(line.lstrip()) == column for line in continued), shown


def test_show_prints_the_time_a_now_entry_recorded(desk: str) -> None:
    """``tether.now()``'s entry (an approval records when it started waiting) shows its
    time, not epoch seconds: on a terminal and in a pipe's full lines alike (the pipe
    printed ``1796542647.156``)."""
    shown = on_terminal("show", WAITER, db=desk, columns=120)
    row = next(line for line in shown.splitlines() if re.match(r" +\d+  now ", line))
    assert re.search(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$", row), shown
    # (no attempt and no duration: "-", where it read 0 and "0 µs")
    assert re.search(r"\n +\d+  now +now +ok +- +-  "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z\n",
                     tether_cli("show", WAITER, db=desk).stdout)


def test_the_key_column_is_as_wide_as_the_keys_it_holds() -> None:
    """Keys shorter than ``KEY_MIN`` cut no other cell to make room for it; keys that
    have lines of their own leave it no wider than its title."""
    rows = [["r1", "customer_onboarding_pipeline", "default"]]
    assert columns(("RUN ID", "WORKFLOW", "QUEUE"), rows, 200, ((1, 8), (2, 5))) == [
        "RUN ID WORKFLOW                     QUEUE",
        "r1     customer_onboarding_pipeline default"]
    # Keys all longer than KEY_MIN and the room: each on a line of its own, the column
    # as narrow as its title.
    assert columns(("RUN ID", "WORKFLOW"), [["a" * 30, "wf"], ["b" * 25, "other"]], 30) == [
        "RUN ID WORKFLOW", "a" * 30, "       wf", "b" * 25, "       other"]
    # Too narrow for every cell: the given columns are cut, as much as the line needs.
    assert columns(("RUN ID", "WORKFLOW", "QUEUE"), rows, 26, ((1, 8), (2, 5))) == [
        "RUN ID WORKFLOW    QUEUE", "r1     customer_o… default"]


def command_names() -> list[tuple[str, ...]]:
    """Every ``tether`` command and sub-action, as its ``--help`` is asked for."""
    from tether.cli import build_parser

    def actions(parser: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = [path]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += actions(sub, (*path, name))
        return found

    return actions(build_parser(), ())


#: How each command with ``--wide`` fits its output on a terminal (the tests above show
#: it), as its ``--wide`` help must say.
FITTED = {("show",): "long ids cut in the middle",
          ("runs",): "a run id is never cut", ("approvals",): "a run id is never cut",
          ("schedules",): "a schedule's name and its last run's id are never cut",
          ("schedules", "list"): "a schedule's name and its last run's id are never cut",
          ("queues",): "nothing is cut", ("versions",): "nothing is cut",
          ("workers",): "a worker id is never cut"}


def test_each_wide_help_says_how_its_command_fits() -> None:
    """Until 2026-12-06 every ``--wide`` said "long ids cut in the middle", though
    ``runs``, ``approvals`` and ``schedules`` never cut an id, and ``queues`` and
    ``versions`` cut nothing."""
    from tether.cli import build_parser

    helps: dict[tuple[str, ...], str] = {}

    def walk(parser: Any, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if "--wide" in action.option_strings:
                helps[path] = action.help
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))

    walk(build_parser(), ())
    assert set(helps) == set(FITTED), helps
    for path, help_text in helps.items():
        assert FITTED[path] in help_text, (path, help_text)
        assert ("cut in the middle" in help_text) == (path == ("show",)), (path, help_text)


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_every_help_fits_the_terminal(width: int) -> None:
    """``tether [COMMAND [ACTION]] --help`` on a terminal ``width`` wide: no line wraps
    (the usage line of ``runs`` listed ``--status``' seven choices in 85 columns; at 60
    columns argparse indented ``[--log-level {debug,info,warning,error}]`` under
    ``usage: tether schedules list`` to 69, and at 40 every command's usage went past)."""
    names = command_names()
    assert ("runs",) in names and ("schedules", "list") in names and ("db", "status") in names
    for path in names:
        shown = terminal_output([sys.executable, "-m", "tether", *path, "--help"], width)
        assert long_lines(shown, width) == [], (path, shown)


# -- message lines ----------------------------------------------------------------------------

FAMILY = "quarterly-report-7f3a9c2e-41d2-4b8e-9c1a-2f6e8d0b5a17"
ASKS = "expense-claim-7f3a9c2e-41d2-4b8e-9c1a-2f6e8d0b5a17"
NOTE = "approved by the finance desk under the travel policy of 2026, section 4.2, receipts seen"


def make_family(url: str) -> None:
    """A parent with four children (long ids, all ended: five runs to purge) and a run
    waiting for approval (no worker left to end it once approved)."""
    from tether.ai import request_approval

    app = App(url)

    @app.workflow
    async def section(n: int) -> str:
        return f"section {n}"

    @app.workflow
    async def report() -> list[str]:
        return [await tether.call(section, n) for n in range(4)]

    @app.workflow
    async def claim() -> bool:
        decision = await request_approval("reimburse", REFUND, WHY, approval_id="a-0")
        return decision.approved

    async def run() -> None:
        async with app, app.worker(poll_interval=0.05):
            await (await app.start(report, run_id=FAMILY)).result(timeout=30)
            await app.start(claim, run_id=ASKS)
            for _ in range(600):
                if (await app.get_run(ASKS)).status.value == "waiting":
                    break
                await asyncio.sleep(0.05)

    asyncio.run(run())


def test_messages_wrap_at_word_boundaries(tmp_path: Any) -> None:
    """``approve``, ``erase`` and ``purge`` print a sentence: on a terminal it is wrapped
    between words (an id stays whole on one line), nothing left out."""
    url = f"sqlite:///{tmp_path}/family.db"
    make_family(url)
    answered = on_terminal("approve", ASKS, "--note", NOTE, db=url, columns=80)
    assert long_lines(answered, 80) == [] and len(answered.splitlines()) > 1, answered
    assert " ".join(answered.split()).startswith(f"{ASKS}: approved reimburse {{"), answered
    assert " ".join(answered.split()).endswith(f"(note: {NOTE})"), answered
    erased = on_terminal("erase", FAMILY, db=url, columns=80)
    assert long_lines(erased, 80) == [], erased
    words = erased.replace(",", " ").replace(")", " ").replace("(", " ").split()
    assert {f"{FAMILY}.{n}" for n in (0, 2, 4, 6)} <= set(words), erased  # (positions)
    assert " ".join(erased.split()).startswith(f"erased run {FAMILY} and 4 runs of its "
                                               "family"), erased
    purged = on_terminal("purge", "--older-than", "0s", db=url, columns=60)
    assert long_lines(purged, 60) == [] and purged.startswith("purged 5 runs: "), purged
    assert " ".join(purged.split()).endswith("message texts no run references"), purged


def test_an_id_after_a_label_is_never_cut_where_it_fits_a_line() -> None:
    """``wrap`` of text whose first word (a run id) fits a line but not after the label:
    the id goes under the label whole. textwrap cut it where the label's line ended
    (``tether show`` of a fork on a 40-column terminal: "forked from run
    01a24b4ed53177e2b3277fcb" / "4cf70e1d at position 3"), so the id a person copies
    was in two pieces."""
    source = "01a24b4ed53177e2b3277fcb4cf70e1d"
    text = f"{source} at position 3 (positions 0..2 copied from it)"
    got = wrap(text, 40, "forked from run ")
    assert got[0] == "forked from run" and got[1].split()[0] == source, got
    assert all(len(line) <= 40 for line in got), got
    got = wrap(text, 60, "forked from run ")  # (room after the label: unchanged)
    assert got[0] == f"forked from run {source} at position", got
    assert wrap("x" * 50, 40, "label: ")[0] != "label:"  # (longer than any line: as before)


def test_schedules_say_an_overdue_tick_and_a_paused_schedule(sqlite_url: str) -> None:
    """A schedule whose next tick is past by more than a minute (no worker of its
    workflow runs: workers down) has "overdue" after its NEXT TICK, and a paused one
    "- (paused)", on a terminal and in a pipe; a tick ahead has no note. Until 2026-12-06
    a tick two hours late read as any other."""
    from tether._lifecycle import make_spec, to_record

    async def make() -> None:
        app = App(sqlite_url)

        @app.workflow
        async def greet(x: str) -> str:
            return x

        async with app:
            now = app.clock.now()
            for name, cron, at in (("late", "*/5 * * * *", now - 7200),
                                   ("ontime", "0 3 * * *", now), ("held", "0 * * * *", now)):
                spec = make_spec("greet", "default", cron, name=name, args=("cron",))
                await app.store.schedule_upsert(schedule=to_record(app, spec, at))
            await app.store.schedule_pause(name="held", paused=True, next_tick=None, now=now)

    asyncio.run(make())
    piped = tether_cli("schedules", db=sqlite_url)
    assert piped.returncode == 0, piped.stderr
    fitted = on_terminal("schedules", db=sqlite_url, columns=100)
    for listed in (piped.stdout, fitted):
        rows = {ln.split()[0]: ln for ln in listed.splitlines()[1:]}
        assert re.search(r" active +\S+ \S+ overdue ", rows["late"] + " "), listed
        assert re.search(r" paused +- \(paused\)", rows["held"]), listed
        assert "overdue" not in rows["ontime"] and "paused" not in rows["ontime"], listed
    # (the column is as wide as its widest cell: LAST RUN stays one column)
    header, *lines = piped.stdout.splitlines()
    assert {ln.rindex(" -") for ln in lines} == {header.index("LAST RUN") - 1}, piped.stdout


def test_schedules_keep_their_columns_in_line_beside_a_long_name(sqlite_url: str) -> None:
    """A schedule's name longer than the NAME column: into a pipe the rest of its row
    was pushed out of line with the heading and the other rows (the columns kept their
    fixed widths); on a terminal the columns narrower than their least width were
    widened to it ("WORKFLOW         " over "reconcile") while the time zone was cut
    ("Europ…") for want of room. Each cell starts under its heading, and on a terminal
    every column is as wide as its longest cell, "Europe/Paris" whole at 80 columns."""
    from tether._lifecycle import make_spec, to_record

    long_name = "nightly-reconcile-payments-for-the-previous-business-day"

    async def make() -> None:
        app = App(sqlite_url)

        @app.workflow
        async def reconcile() -> None:
            return None

        async with app:
            now = app.clock.now()
            for name, cron, zone in ((long_name, "0 3 * * *", "Europe/Paris"),
                                     ("short", "*/5 * * * *", "UTC")):
                spec = make_spec("reconcile", "default", cron, name=name, timezone=zone)
                await app.store.schedule_upsert(schedule=to_record(app, spec, now))

    asyncio.run(make())
    piped = tether_cli("schedules", db=sqlite_url)
    assert piped.returncode == 0, piped.stderr
    for listed, width in ((piped.stdout, None), *(
            (on_terminal("schedules", db=sqlite_url, columns=c), c) for c in (200, 80))):
        header, *lines = listed.splitlines()
        rows = [ln for ln in lines if " active " in ln]  # (the cells: beside the name or under it)
        assert len(rows) == 2, listed
        for title, cell in (("WORKFLOW", " reconcile "), ("STATE", " active ")):
            assert {row.index(cell) + 1 for row in rows} == {header.index(title)}, listed
        paris = next(row for row in rows if "Europe/Paris" in row)
        assert paris.index(" Europe/Paris ") + 1 == header.index("TZ"), listed
        if width is not None:
            assert "WORKFLOW  CRON" in header and "Europe/Paris active" in listed, listed


#: A queue name longer than the QUEUE column of a narrow terminal holds.
LONG_QUEUE = "payments-reconciliation-eu-west-long-queue"
#: Run ids of ``KEY_MIN`` (20) characters and shorter, which keep their row when they can.
NAMED = ("a-run-id-of-20-chars", "short-id-1", "short-id-2")


@pytest.fixture(scope="module")
def long_queue(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Runs of a long workflow name on a long queue: completed, cancelled, waiting and
    queued, their ids 20 characters long and shorter, and one of the engine's own."""
    url = f"sqlite:///{tmp_path_factory.mktemp('long_queue')}/q.db"
    app = App(url)

    @app.workflow(queue=LONG_QUEUE)
    async def reconcile_payments_for_the_previous_day(wait: bool) -> None:
        if wait:
            await tether.wait_for_signal("approval")

    async def run() -> None:
        async with app, app.worker(poll_interval=0.05):
            await (await app.start(reconcile_payments_for_the_previous_day, False,
                                   run_id=NAMED[0])).result(timeout=30)
            await app.start(reconcile_payments_for_the_previous_day, True, run_id=NAMED[1])
            for _ in range(600):
                if (await app.get_run(NAMED[1])).status.value == "waiting":
                    break
                await asyncio.sleep(0.05)
        async with App(url) as client:  # (no worker: queued, and cancelled at once)
            await client.start(reconcile_payments_for_the_previous_day, False,
                               run_id=NAMED[2])
            await client.cancel(NAMED[2])
            await client.start(reconcile_payments_for_the_previous_day, False)

    asyncio.run(run())
    return url


@pytest.mark.parametrize("width", [40, 41, 60, 80])
def test_runs_of_a_long_queue_fit_the_narrowest_terminal(long_queue: str, width: int) -> None:
    """At 40 and 41 columns ``tether runs`` printed lines of 42 to 45 characters when a
    long queue name had its column cut to its least and a run id of 20 characters kept
    the RUN ID column that wide (with a cancelled run's STATUS, 9 wide). The RUN ID
    column now narrows to the ids it has room for; a longer one has a line of its own,
    above its row. Every id is still whole at the start of a line."""
    listed = on_terminal("runs", db=long_queue, columns=width)
    ids = {r["run_id"] for r in json.loads(tether_cli("runs", "--json", db=long_queue).stdout)}
    assert set(NAMED) < ids, listed
    assert [line for line in long_lines(listed, width) if line not in ids] == [], listed
    starts = [line.split()[0] for line in listed.splitlines()[1:] if not line.startswith(" ")]
    assert sorted(starts) == sorted(ids), listed
    assert [line.strip() for line in listed.splitlines()
            if line.startswith("  waiting for: ")] in ([], ["waiting for: signal approval"])


# -- every table at every width ---------------------------------------------------------------

#: A run whose workflow, step name and result hold wide characters.
WIDE_RUN = "wide-run-1"
#: A schedule's name of wide characters (8 characters, 15 columns).
WIDE_NAME = "月次レポート-🚀"


def columns_of(line: str) -> int:
    """The columns ``line`` takes on a terminal: 2 for an East Asian wide or full-width
    character (CJK, emoji), 1 for the others (the test's text has no combining marks)."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


#: A schedule of a long cron expression and time zone, its workflow of a long name on a
#: queue of a name longer than a 60-column line leaves its column.
LONG_CRON = "*/15 0-6,18-23 1-7,15-21 1,3,5,7,9,11 1-5"
SWEEP_QUEUE = "reporting-queue-for-quarterly-customer-reports-eu"
#: The longest queue name, and one of a wide character (one column more than characters).
WIDE_QUEUE = f"🚀-{SWEEP_QUEUE}"
#: A host name longer than a 40-column line leaves a HOST column.
WIDE_HOST = "worker-7.reporting.eu-west-1.compute.internal"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``desk``'s runs, approval, schedule, queues and versions, ``store``'s runs (long
    step and child names, a failed step's long error), and a schedule whose cron
    expression, time zone, workflow and queue are all long, with a short-named one."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sweep')}/sweep.db"
    make_desk(url)
    make_runs(url)
    app = App(url)

    @app.schedule(LONG_CRON, timezone="America/Argentina/ComodRivadavia",
                  name="quarterly-customer-report-pipeline-eu")
    @app.workflow(name="launch_the_quarterly_customer_report_pipeline", queue=SWEEP_QUEUE)
    async def launch() -> None:
        return None

    @app.schedule("0 * * * *", name="hourly")
    @app.workflow(name="tiny")
    async def tiny() -> None:
        return None

    # Wide characters (two columns each on a terminal) in a name, a workflow and a queue.
    @app.schedule("30 6 * * 1-5", timezone="Asia/Tokyo", name=WIDE_NAME)
    @app.workflow(name="📊_月次レポートを顧客ごとに作成する", queue=WIDE_QUEUE)
    async def wide() -> None:
        return None

    @app.step(name="📦_倉庫から商品を確保する_reserve_items_for_the_order")
    async def reserve() -> str:
        return "倉庫 7 番で確保しました: 3 点、明日出荷予定 📦"

    @app.workflow(name="📦_注文処理")
    async def wide_steps() -> str:
        return await reserve()

    async def run() -> None:
        async with app:
            async with app.worker(poll_interval=0.05):  # (its worker creates them)
                await (await app.start(launch)).result(timeout=30)
                await (await app.start(wide_steps, run_id=WIDE_RUN)).result(timeout=30)
            # Registrations of two workers killed long ago (stale: ``workers --all``
            # lists them), of a long host name and long queue names.
            for i, queues in enumerate((f"{SWEEP_QUEUE},default", WIDE_QUEUE)):
                await app.store.worker_register(info=WorkerInfo(
                    f"{WIDE_HOST}:{4000 + i}:0b8e51d2", WIDE_HOST, 4000 + i, "s", queues,
                    1_700_000_000.0 + i, 1_700_000_100.0 + i))

    asyncio.run(run())
    return url


@pytest.mark.parametrize("width", [40, 60, 80, 120])
@pytest.mark.parametrize("command", [("runs",), ("approvals",), ("schedules",),
                                     ("schedules", "list"), ("queues",), ("versions",),
                                     ("workers", "--all"), ("show", PARENT),
                                     ("show", FAILING), ("show", WAITER),
                                     ("show", WIDE_RUN), ("db", "status")])
def test_no_table_line_is_wider_than_the_terminal(sweep: str, command: tuple[str, ...],
                                                  width: int) -> None:
    """On a terminal ``width`` wide no line of these tables is wider than it, but a single
    word longer than the whole width (an id, a name) alone on its line. Until 2026-12-07
    ``schedules`` printed 55-character lines at 40 columns (the next tick to the second
    beside cron and time zone), ``approvals`` 57 (SINCE), ``queues`` 99 at 40 to 80 (the
    QUEUE column as wide as its longest name), ``versions`` a 50-column heading and
    ``show`` 55-column journal rows (NAME cut to 16 beside the other cells), attempts of
    50 (the worker id) and "run ID" and "N  CHILD-ID" lines past the width. A wide
    character counts two columns: a row of one took a column more per such character."""
    shown = on_terminal(*command, db=sweep, columns=width)
    assert [line for line in shown.splitlines()
            if columns_of(line) > width and len(line.split()) > 1] == [], shown
    piped = tether_cli(*command, db=sweep).stdout
    if command[0] in ("queues", "versions"):  # (nothing cut: every word still there)
        assert sorted(shown.split()) == sorted(piped.split()), shown


@pytest.mark.parametrize("width", [40, 50])
def test_schedules_keep_name_state_and_next_tick_on_a_narrow_terminal(sweep: str,
                                                                       width: int) -> None:
    """What an operator reads first stays in its row: the name (or above it, whole), the
    state and the next tick (to the minute); at 40 the cron expression and time zone go
    under the row, whole (at 50 too when a name of 15 columns leaves them no room)."""
    shown = on_terminal("schedules", db=sweep, columns=width)
    lines = shown.splitlines()
    assert lines[0].split()[0] == "NAME" and "STATE" in lines[0], shown
    row = next(line for line in lines if line.startswith("hourly "))
    assert re.search(r" active \d\d-\d\d \d\d:\d\dZ$", row), shown
    cron = [line for line in lines if line.startswith("  cron: ")]
    if cron:
        assert "  cron: 0 * * * * (UTC)" in lines, shown
        assert LONG_CRON in unwrapped(shown.splitlines()), shown
        assert "(America/Argentina/ComodRivadavia)" in shown.split(), shown
    else:
        assert LONG_CRON[:6] in shown, shown
    assert cron or width == 50, shown  # (50: cut in their columns if the names leave room)


def test_cells_are_cut_and_padded_by_the_columns_they_take() -> None:
    """A wide character takes two columns on a terminal: cut to 9 columns, "月次レポート"
    (12 columns) keeps 4 characters and the ellipsis; it kept 8 (a 12-column cell,
    "…" included, where 9 were given)."""
    from tether._fit import cells, pad

    assert cells("月次レポート-🚀") == 15 and cells("abc") == 3 and cells("e\u0301") == 1
    assert cut_end("月次レポート", 9) == "月次レポ…" and columns_of(cut_end("月次レポート", 9)) == 9
    assert cut_middle("月次レポート-🚀-東京", 11) == "月次…-東京"  # (10: no half character)
    assert pad("🚀", 4) == "🚀  "
    assert columns(("NAME", "STATE"), [["月次レポート", "active"], ["hourly", "paused"]], 40) == [
        "NAME         STATE", "月次レポート active", "hourly       paused"]


def test_a_pipe_gets_each_queue_on_one_line(sweep: str) -> None:
    """Into a pipe ``tether queues`` prints a row a line, however wide (a queue name of
    wide characters too: what a terminal gets is fitted, a pipe's lines are not)."""
    piped = tether_cli("queues", db=sweep)
    assert piped.returncode == 0, piped.stderr
    header, *rows = piped.stdout.splitlines()
    assert header.split()[:2] == ["QUEUE", "LIMIT"] and header.endswith("WORKFLOWS"), header
    assert {row.split()[0] for row in rows} == {"default", "payments", SWEEP_QUEUE,
                                                WIDE_QUEUE}, piped.stdout
    assert all(len(row.split()) >= 8 for row in rows), piped.stdout
    # (its QUEUE column as wide as the longest name, by the columns its characters take
    # on a screen, as the other tables: until 2026-12-07 by its characters, the wide
    # one's row out of line with the others by a column)
    header_at = columns_of(header[:header.index(" LIMIT") + len(" LIMIT")])
    assert header_at == columns_of(WIDE_QUEUE) + 8, piped.stdout
    for row in rows:
        limit = re.match(r"\S+\s+\S+", row)
        assert limit is not None and columns_of(limit[0]) == header_at, piped.stdout


def test_db_status_ends_with_its_answer_on_a_terminal(tmp_path: Any) -> None:
    """On a terminal ``tether db status`` ends with the answer its lines make (all applied,
    or how many are pending and what applies them), wrapped to the width; into a pipe it
    prints the lines alone, as scripts read them (``grep -c pending``)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    fresh = terminal_output([sys.executable, "-m", "tether", "db", "status", "--db", url], 40)
    lines = fresh.splitlines()
    said = " ".join(" ".join(lines).split())
    assert re.search(r"(\d+) of \1 migrations pending: `tether db migrate` applies", said), fresh
    assert all(len(line) <= 40 for line in lines), fresh
    piped = tether_cli("db", "status", db=url)
    assert piped.returncode == 0
    assert all(re.fullmatch(r"\d{4} \S+ +pending", ln) for ln in piped.stdout.splitlines())
    assert tether_cli("db", "migrate", db=url).returncode == 0
    done = terminal_output([sys.executable, "-m", "tether", "db", "status", "--db", url], 80)
    assert re.search(r"^up to date: all \d+ migrations applied$", done, re.M), done


# -- error and warning lines ------------------------------------------------------------------


def stderr_on_terminal(argv: list[str], columns: int) -> tuple[int, str]:
    """The exit status of ``tether ARGV``, and what it writes to stderr, a terminal
    ``columns`` wide (stdout into a pipe)."""
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    env["COLUMNS"] = str(columns)
    leader, follower = pty.openpty()
    try:
        proc = forked.Popen([sys.executable, "-m", "tether", *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=follower, env=env)
    finally:
        os.close(follower)
    err = read_all(leader)
    proc.communicate(timeout=120)
    return proc.returncode, err.decode().replace("\r\n", "\n")


@pytest.mark.parametrize("columns", [40, 80])
def test_error_and_warning_lines_wrap_between_words_on_a_terminal(
        sqlite_url: str, tmp_path: Any, columns: int) -> None:
    """A ``tether: error:`` or ``tether: warning:`` line longer than the terminal was
    left to the terminal, which broke it anywhere (``TETHER_DA`` / ``TABASE_URL``) while
    the tables beside it were fitted: on a terminal it is wrapped between words, its
    lines after the first indented, nothing cut (a path longer than a line stays whole
    on one of its own). Into a pipe it stays one line, for a script's grep."""
    missing = str(tmp_path / "a-folder-of-stores" / "this-store-was-never-created.db")
    # (The start's warning names its run: the same id, in a store of its own each.)
    start = ["start", "nobody-registered-this", "--id", "r-1", "--db"]
    cases = [(["show", "r-1", "--db", f"sqlite:///{missing}"], "tether: error: ", 1, []),
             ([*start, sqlite_url], "tether: warning: ", 0,
              [*start, f"sqlite:///{tmp_path}/piped.db"])]
    for argv, head, code, argv_piped in cases:
        rc, err = stderr_on_terminal(argv, columns)
        piped = forked.run([sys.executable, "-m", "tether", *(argv_piped or argv)],
                           capture_output=True, text=True, timeout=60)
        said = [line for line in piped.stderr.splitlines() if line.startswith(head)]
        assert (rc, piped.returncode, len(said)) == (code, code, 1), (err, piped.stderr)
        assert len(said[0]) > columns, said  # (long enough to need it)
        lines = err.splitlines()
        assert lines[0].startswith(head) and len(lines) > 1, err
        assert all(line.startswith("  ") for line in lines[1:]), err
        assert [line for line in long_lines(err, columns)
                if line.strip() != missing] == [], err
        assert err.split() == said[0].split(), err  # every word, in order, none cut


@pytest.mark.parametrize("columns", [40, 80])
@pytest.mark.parametrize("argv", [
    ["runs", "--log-level", "loudest-of-all-the-levels-there-could-ever-be"],
    ["show"],
    ["runs", "--include-the-runs-of-every-queue-and-every-workflow-version"],
    ["no-such-command-anywhere-in-tether"],
])
def test_usage_errors_wrap_between_words_on_a_terminal(columns: int, argv: list[str]) -> None:
    """argparse's own usage error (an invalid choice, a missing argument, an unknown flag
    or command) follows the rule of every ``tether: error:`` line: on a terminal wrapped
    between words, its lines after the first indented by 2, nothing cut; the terminal
    broke it anywhere. Into a pipe it is one line, as argparse prints it."""
    rc, err = stderr_on_terminal(argv, columns)
    piped = forked.run([sys.executable, "-m", "tether", *argv], capture_output=True,
                       text=True, timeout=60)
    said = [line for line in piped.stderr.splitlines() if ": error: " in line]
    assert (rc, piped.returncode, len(said)) == (2, 2, 1), (err, piped.stderr)
    assert piped.stderr.startswith("usage: tether") and piped.stderr.endswith(said[0] + "\n")
    lines = err.splitlines()
    at = next(i for i, line in enumerate(lines) if ": error: " in line)
    message = lines[at:]
    assert err.startswith("usage: tether"), err
    assert len(message) > 1 if len(said[0]) > columns else message == said, err
    assert all(line.startswith("  ") for line in message[1:]), err
    # (a word longer than the line, the unknown flag, stays whole on a line of its own)
    assert [line for line in long_lines("\n".join(message), columns)
            if len(line.split()) > 1] == [], err
    assert " ".join(message).split() == said[0].split(), err  # every word, in order


def test_a_label_is_followed_by_one_space_when_its_text_is_not_ascii(
        sqlite_url: str) -> None:
    """A failed run's error of non-ASCII text (``·``, ``é``) on a terminal read
    ``failed:  ValueError: ...``, two spaces after the label, where ASCII text had one:
    the wrapping by cells (``_fit._words``) added a space to the label's own. It has
    one, and the lines under it start under the text."""
    message = ("le paiement a échoué · carte refusée par la banque émettrice après "
               "trois tentatives · commande 7f3a9c2e")
    app = App(sqlite_url)

    @app.workflow
    async def pays() -> None:
        raise ValueError(message)

    async def run() -> None:
        async with app, app.worker(poll_interval=0.05):
            with pytest.raises(RunFailed):
                await (await app.start(pays, run_id="pays-1")).result(timeout=30)

    asyncio.run(run())
    for width in (200, 60):
        lines = on_terminal("show", "pays-1", db=sqlite_url, columns=width).splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("failed:"))
        assert lines[start].startswith("failed: ValueError: le paiement"), lines
        said = [lines[start]]
        for line in lines[start + 1:]:
            if not line.startswith(" " * len("failed: ")):
                break
            assert line[len("failed: ")] != " ", lines  # (under the text's start)
            said.append(line)
        assert unwrapped(said) == f"failed: ValueError: {message}", lines
        assert (len(said) > 1) == (width == 60), lines
