"""``tether show`` and ``tether runs`` on a terminal: fitted to its width (``$COLUMNS``),
long cells cut, every run id a person copies still whole somewhere; ``--wide``, and
any output that is not a terminal, print every cell whole as before.

The commands run on a real pseudo-terminal: a pipe is not a terminal, and what a pipe
gets must not change (scripts read it).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pty
import re
import subprocess
import sys

import pytest

import tether
from tests import forked
from tests.cli.test_cli import tether_cli
from tether import App, RetryPolicy, RunFailed
from tether.cli._fit import cut_end, cut_middle, pack, wrap

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
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    env["COLUMNS"] = str(columns)
    leader, follower = pty.openpty()
    try:
        proc = forked.Popen([sys.executable, "-m", "tether", *args, "--db", db],
                            stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=subprocess.PIPE, env=env)
    finally:
        os.close(follower)
    out = b""
    try:
        while True:
            try:
                data = os.read(leader, 1 << 16)
            except OSError:  # (Linux: EIO once the command has closed the terminal)
                break
            if not data:
                break
            out += data
    finally:
        os.close(leader)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode().replace("\r\n", "\n")  # (the terminal's own line ends)


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
    failed = shown[shown.index("\nfailed: ") + 1:]
    assert " ".join(failed.split()) == f"failed: ConnectionError: {MESSAGE}", shown


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


def test_cutting_cells() -> None:
    assert cut_middle(f"{PARENT}.12", 20) == "order-7f3a…0b5a17.12"
    assert cut_middle("short", 20) == "short" and cut_end("short", 5) == "short"
    assert cut_end("abcdefgh", 5) == "abcd…"
    assert pack(["run a", "workflow b", "queue c"], 18) == ["run a  workflow b", "queue c"]
    assert wrap("one two three four", 12, "x: ") == ["x: one two", "   three", "   four"]
    assert wrap("word " * 40, 20, "x: ", max_lines=2)[-1].endswith("…")
