"""The ``tether`` command as a user runs it: real subprocesses against a real store.

Bad input (unknown run, malformed JSON, unknown workflow, unreachable database) gets a
one-line error on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import tether
from tests import forked
from tether import App
from tether._show import run_document
from tether.cli._common import fmt_time


def tether_cli(*args: str, db: str | None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TETHER_DATABASE_URL", None)
    argv = [sys.executable, "-m", "tether", *args]
    if db is not None:
        argv += ["--db", db]
    return forked.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0, proc
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "tether: error:" in ln]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def make_app(url: str) -> App:
    app = App(url)

    @app.step
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow(name="doubler")
    async def doubler(x: int) -> dict[str, int]:
        return {"x": x, "doubled": await double(x)}

    @app.workflow(name="approval")
    async def approval() -> object:
        tether.set_status({"waiting_for": "approve"})
        return await tether.wait_for_signal("approve")

    return app


@pytest.fixture
async def served(store_url: str) -> AsyncIterator[tuple[App, str]]:
    """A store with a worker serving ``doubler`` and ``approval`` in this process."""
    app = make_app(store_url)
    async with app.worker(poll_interval=0.1):
        yield app, store_url
    await app.close()


async def cli(*args: str, db: str | None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(tether_cli, *args, db=db)


async def test_start_show_result_runs_by_name(served: tuple[App, str]) -> None:
    _, url = served
    started = await cli("start", "doubler", "--id", "d-1", "--input", "[21]", db=url)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "d-1"
    got = await cli("result", "d-1", "--wait", "30", db=url)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"x": 21, "doubled": 42}
    again = await cli("start", "doubler", "--id", "d-1", "--input", "[99]", db=url)
    assert again.returncode == 0 and again.stdout.strip() == "d-1"  # idempotent
    shown = await cli("show", "d-1", "--json", db=url)
    doc = json.loads(shown.stdout)
    assert doc["status"] == "completed"
    assert [(e["kind"], e["name"], e["status"]) for e in doc["journal"]] == [
        ("step", "double", "ok")]
    listed = json.loads((await cli("runs", "--json", db=url)).stdout)
    assert {r["run_id"]: r["status"] for r in listed} == {"d-1": "completed"}
    text = (await cli("show", "d-1", db=url)).stdout
    assert "double" in text and "completed" in text


async def test_result_json_gives_status_and_result_or_error(served: tuple[App, str]) -> None:
    """``tether result`` had no ``--json`` (its siblings have one): it prints the run's
    ``run_id``, ``status``, ``result`` and ``error`` as ``show --json`` has them, for a
    run that ended cancelled or has not ended too, with the exit status and error line
    it has without ``--json``; without it the output is the result alone, as before."""
    app, url = served
    await app.start("doubler", 21, run_id="d-1")
    plain = await cli("result", "d-1", "--wait", "30", db=url)
    assert plain.returncode == 0 and json.loads(plain.stdout) == {"x": 21, "doubled": 42}
    got = await cli("result", "d-1", "--wait", "30", "--json", db=url)
    assert got.returncode == 0, got.stderr
    doc = json.loads(got.stdout)
    shown = json.loads((await cli("show", "d-1", "--json", db=url)).stdout)
    assert doc == {key: shown[key] for key in ("run_id", "status", "result", "error")}
    assert doc == {"run_id": "d-1", "status": "completed",
                   "result": {"x": 21, "doubled": 42}, "error": None}
    await app.start("approval", run_id="w-1")
    await _waiting(app, "w-1")
    waiting = await cli("result", "w-1", "--json", db=url)
    assert waiting.returncode == 3
    assert json.loads(waiting.stdout) == {"run_id": "w-1", "status": "waiting",
                                          "result": None, "error": None}
    assert_one_line_error(waiting, "has not ended")
    await app.cancel("w-1")
    cancelled = await cli("result", "w-1", "--wait", "30", "--json", db=url)
    assert cancelled.returncode == 1, cancelled.stderr
    doc = json.loads(cancelled.stdout)
    shown = json.loads((await cli("show", "w-1", "--json", db=url)).stdout)
    assert doc["status"] == "cancelled" and doc["result"] is None
    assert doc == {key: shown[key] for key in ("run_id", "status", "result", "error")}
    assert_one_line_error(cancelled, "w-1")


async def test_starting_an_existing_run_id_says_so_on_stderr(store_url: str) -> None:
    """``tether start WF --id X`` for an existing run X printed X and exited 0 without a
    word, whatever its input: it still does (idempotent), with a warning line saying the
    run was not started again and whether its input differs; ``--json`` prints the run's
    document (as ``POST /api/v1/runs`` answers it) with ``created`` and
    ``input_differs``."""
    make_app(store_url)  # (the store is used, no worker runs: the runs stay queued)
    first = await cli("start", "later", "--id", "s-1", "--input", "[1]", "--json",
                      db=store_url)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert (doc["run_id"], doc["input"], doc["status"]) == ("s-1", [1], "queued")
    assert (doc["created"], doc["input_differs"]) == (True, False)
    assert "already existed" not in first.stderr
    # No worker registered the workflow: said for the run created, not for the id again.
    assert "no worker has registered workflow 'later'" in first.stderr

    for given, how, differs in (("[2]", "its input differs from this one", True),
                                ("[1]", "its input is the same", False)):
        again = await cli("start", "later", "--id", "s-1", "--input", given, db=store_url)
        assert again.returncode == 0, again.stderr
        assert again.stdout == "s-1\n"
        lines = [ln for ln in again.stderr.splitlines() if "already existed" in ln]
        assert len(lines) == 1, again.stderr
        assert "no worker has registered" not in again.stderr
        assert lines[0] == (f"tether: warning: run 's-1' already existed and was "
                            f"not started again; {how}"), lines[0]
        shown = await cli("start", "later", "--id", "s-1", "--input", given, "--json",
                          db=store_url)
        doc = json.loads(shown.stdout)
        assert (doc["run_id"], doc["input"]) == ("s-1", [1])  # the existing run's
        assert (doc["created"], doc["input_differs"]) == (False, differs)
    # No --input is no arguments: compared as such.
    bare = await cli("start", "later", "--id", "s-1", "--json", db=store_url)
    assert json.loads(bare.stdout)["input_differs"] is True
    assert "its input differs from this one" in bare.stderr


async def test_an_id_a_run_of_another_workflow_holds_is_bad_input(
        served: tuple[App, str]) -> None:
    """``tether start approval --id d-x`` where ``d-x`` is a run of ``doubler``: one line
    naming that workflow, exit 2 (bad input, as ``tether fork --id`` of an id another
    run holds); it exited 1, as for a store that cannot be reached."""
    app, url = served
    await (await app.start("doubler", 1, run_id="d-x")).result(timeout=30)
    got = await cli("start", "approval", "--id", "d-x", db=url)
    assert got.returncode == 2, got.stderr
    assert_one_line_error(got, "run id 'd-x' is already used by a run of workflow "
                               "'doubler'")


async def test_starting_an_existing_run_id_on_another_queue_says_so(store_url: str) -> None:
    """The warning for an existing id said whether the input differs, not the queue: a
    run that sits on queue ``side`` while this start names another queue (or, without
    ``--queue``, the workflow's own) is now said so, and ``--json`` has
    ``queue_differs``."""
    make_app(store_url)
    first = await cli("start", "later", "--id", "s-2", "--queue", "side", "--json",
                      db=store_url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["queue_differs"] is False
    for queue, said in ((["--queue", "side"], None), (["--queue", "other"], "'other'"),
                        ([], "'default'")):  # no worker knows 'later': default queue
        again = await cli("start", "later", "--id", "s-2", *queue, "--json", db=store_url)
        assert again.returncode == 0, again.stderr
        doc = json.loads(again.stdout)
        assert (doc["created"], doc["input_differs"], doc["queue"]) == (False, False,
                                                                       "side")
        assert doc["queue_differs"] is (said is not None), queue
        lines = [ln for ln in again.stderr.splitlines() if "already existed" in ln]
        assert len(lines) == 1, again.stderr
        tail = "its input is the same"
        if said is not None:
            tail += f"; its queue 'side' differs from this start's ({said})"
        assert lines[0].endswith(tail), lines[0]


def test_an_existing_run_whose_input_it_cannot_read_is_said_so(tmp_path: Path) -> None:
    """A run started with an encrypted input, restarted by ``tether start`` without
    ``--app``: it cannot tell whether the input differs, and says that."""
    pytest.importorskip("cryptography")
    from tether.encryption import AesGcm

    url = f"sqlite:///{tmp_path}/e.db"

    async def seed() -> None:
        async with App(url, payload_hook=AesGcm({"k1": bytes(range(32))})) as app:
            await app.start("later", 1, run_id="e-1")

    asyncio.run(seed())
    proc = tether_cli("start", "later", "--id", "e-1", "--input", "[1]", "--json", db=url)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["created"], doc["input_differs"]) == (False, None)
    assert doc["input"] == {"unreadable_payload": True, "key_id": "k1"}
    assert "its input could not be read to compare" in proc.stderr


async def test_signal_with_idempotency_key_is_delivered_once(served: tuple[App, str]) -> None:
    """A resend is delivered once and says so; a send under the same key of another
    signal (the key is the run's) said "already sent" too: it says it was NOT sent."""
    app, url = served
    handle = await app.start("approval", run_id="a-1")
    said = []
    for name, data in (("approve", '{"ok": true}'), ("approve", '{"ok": true}'),
                       ("approve", '{"ok": false}'), ("reject", '{"ok": true}')):
        sent = await cli("signal", "a-1", name, "--data", data,
                         "--idempotency-key", "k1", db=url)
        assert sent.returncode == 0, sent.stderr
        said.append(sent.stdout.strip())
    assert said == [
        "a-1: signal 'approve' sent",
        "a-1: signal 'approve' already sent (same idempotency key)",
        "a-1: signal 'approve' NOT sent: the run had other data under this idempotency key",
        "a-1: signal 'reject' NOT sent: the run had signal 'approve' under this "
        "idempotency key"]
    assert await handle.result(timeout=30) == {"ok": True}
    info = await app.get_run("a-1")
    assert [e["kind"] for e in info.journal] == ["signal"]


async def test_unknown_run_id(served: tuple[App, str]) -> None:
    _, url = served
    for args in (("show", "nope"), ("cancel", "nope"), ("result", "nope"),
                 ("signal", "nope", "approve"), ("resume", "nope")):
        assert_one_line_error(await cli(*args, db=url), "nope")


async def test_signal_to_a_finished_run_is_an_error(served: tuple[App, str]) -> None:
    app, url = served
    await (await app.start("doubler", 1, run_id="done")).result(timeout=30)
    assert_one_line_error(await cli("signal", "done", "approve", db=url), "done")


async def test_malformed_json(served: tuple[App, str]) -> None:
    app, url = served
    assert_one_line_error(await cli("start", "doubler", "--input", "[1,", db=url), "--input")
    assert_one_line_error(await cli("start", "doubler", "--input", '{"x": 1}', db=url),
                          "--input")
    await app.start("approval", run_id="a-2")
    assert_one_line_error(await cli("signal", "a-2", "approve", "--data", "{oops", db=url),
                          "--data")
    assert (await app.get_run("a-2")).status.value in ("queued", "running", "waiting")


@pytest.mark.parametrize(("command", "needle"), [
    (("signal", "r", "approve", "--data", "1e400"), "1e400 is out of a float's range"),
    (("signal", "r", "approve", "--data", "NaN"), "NaN is not a JSON value"),
    (("start", "doubler", "--input", "[-Infinity]"), "-Infinity is not a JSON value"),
    (("fork", "r", "--at", "0", "--input", "[1e999]"), "1e999 is out of a float's range"),
])
def test_non_json_numbers_are_bad_input(command: tuple[str, ...], needle: str,
                                        tmp_path: Path) -> None:
    """``NaN``, ``Infinity`` and ``1e400`` in ``--data``/``--input`` are malformed JSON
    (exit 2, like any other), not a payload the encoder refuses later (exit 1, "value of
    type dict is not JSON-serializable")."""
    proc = tether_cli(*command, db=f"sqlite:///{tmp_path}/j.db")
    assert_one_line_error(proc, "is not valid JSON", needle)
    assert proc.returncode == 2


@pytest.mark.parametrize(("command", "fix"), [
    (("start", "doubler", "--input", "hello"), """--input '["hello"]'"""),
    (("signal", "r", "approve", "--data", "ok"), """--data '"ok"'"""),
    (("start", "doubler", "--input", "['a', 1]"), """--input '["a", 1]'"""),
    (("signal", "r", "approve", "--data", "{'by': 'ana'}"), """--data '{"by": "ana"}'"""),
    (("start", "doubler", "--input", "2"), "--input '[6]' passes 6"),
    (("fork", "r", "--at", "0", "--input", '{"n": 1}'), "--input '[6]' passes 6"),
])
def test_json_a_shell_mangled_says_what_to_type(command: tuple[str, ...], fix: str,
                                                tmp_path: Path) -> None:
    """``--data ok`` (or ``--data "ok"``, whose quotes the shell takes) and ``--input
    "['a']"`` were answered with the JSON parser's "Expecting value: line 1 column 1
    (char 0)" alone, and an ``--input`` that is not an array with "must be a JSON
    array": now the line ends with what to type instead. Nothing is sent or started."""
    proc = tether_cli(*command, db=f"sqlite:///{tmp_path}/j.db")
    assert_one_line_error(proc, fix)
    assert proc.returncode == 2
    assert not (tmp_path / "j.db").exists()


@pytest.mark.parametrize("command", [
    ("start", "doubler", "--input", '["\\ud800"]'),
    ("signal", "r", "approve", "--data", '{"who": "a\\udfffb"}'),
    ("fork", "r", "--at", "0", "--input", '["\\ud83d"]'),
    ("start", "doubler", "--input", '["\udcff"]'),  # an argument's byte 0xff
])
def test_a_lone_surrogate_is_bad_input(command: tuple[str, ...], tmp_path: Path) -> None:
    """A lone surrogate in ``--input``/``--data`` (an unpaired ``\\ud800`` escape, or an
    argument's bytes that are not UTF-8) is malformed JSON (exit 2, before the store is
    opened), not a payload the encoder refuses later (exit 1, "value of type dict is
    not JSON-serializable")."""
    proc = tether_cli(*command, db=f"sqlite:///{tmp_path}/j.db")
    assert_one_line_error(proc, "is not valid JSON", "lone surrogate")
    assert proc.returncode == 2
    assert "value of type" not in proc.stderr
    assert not (tmp_path / "j.db").exists()  # refused before anything was written


async def test_unknown_workflow_name(served: tuple[App, str]) -> None:
    """Issue 11: a name no worker registered yet is queued with a warning on stderr."""
    _, url = served
    proc = await cli("start", "no_such_workflow", "--queue", "later", db=url)
    assert proc.returncode == 0, proc.stderr
    assert "no worker has registered workflow 'no_such_workflow'" in proc.stderr
    listed = json.loads((await cli("runs", "--json", db=url)).stdout)
    assert [(r["workflow"], r["queue"], r["status"]) for r in listed] == [
        ("no_such_workflow", "later", "queued")]


async def test_a_misspelt_workflow_name_gets_a_suggestion(served: tuple[App, str]) -> None:
    """``tether start doublr`` (a typo of a workflow a worker registered) is queued with
    the warning of a name no worker has, as before, and the warning now names the
    closest registered workflow: it only said the run would wait, for ever here."""
    _, url = served
    proc = await cli("start", "doublr", "--input", "[1]", db=url)
    assert proc.returncode == 0, proc.stderr
    assert ("no worker has registered workflow 'doublr' in this store yet (did you mean "
            "'doubler'?); the run waits on queue 'default'") in proc.stderr
    unlike = await cli("start", "zzz_nothing_like_it", db=url)
    assert unlike.returncode == 0, unlike.stderr
    assert "did you mean" not in unlike.stderr


async def test_start_json_carries_the_warnings_it_printed(served: tuple[App, str]) -> None:
    """``tether start --json`` printed its warnings (a workflow no worker registered, an
    id already used) on stderr only, where ``POST /api/v1/runs`` gives them in the
    answer's ``warnings``: a script reading the JSON could not see that its run would
    wait for ever. They are now in the JSON too; a start with nothing to warn of has no
    ``warnings``."""
    _, url = served
    typo = await cli("start", "doublr", "--input", "[1]", "--id", "w-1", "--json", db=url)
    assert typo.returncode == 0, typo.stderr
    assert json.loads(typo.stdout)["warnings"] == [
        "run w-1: no worker has registered workflow 'doublr' in this store yet (did you mean "
        "'doubler'?); the run waits on queue 'default' until a worker with that workflow "
        "serves it"]
    fine = await cli("start", "doubler", "--input", "[1]", "--id", "w-2", "--json", db=url)
    assert fine.returncode == 0, fine.stderr
    assert "warnings" not in json.loads(fine.stdout)
    again = await cli("start", "doubler", "--input", "[2]", "--id", "w-2", "--json", db=url)
    assert json.loads(again.stdout)["warnings"] == [
        "run 'w-2' already existed and was not started again; its input differs from "
        "this one"]


async def test_runs_filters_by_workflow_and_queue(store_url: str) -> None:
    """``tether runs --workflow NAME`` and ``--queue NAME`` list the runs the API's and
    the runs page's ``workflow=`` and ``queue=`` list, with ``--status`` and ``--limit``
    too. Before, ``tether runs`` had no such flags (argparse refused them, exit 2): a
    workflow's runs among many others could not be listed from the command line."""
    app = App(store_url)
    async with app:
        for run_id, workflow, queue in (("a-1", "wf_a", "q1"), ("b-1", "wf_b", "q1"),
                                        ("a-2", "wf_a", "q2"), ("b-2", "wf_b", "q2"),
                                        ("a-3", "wf_a", "q1")):
            await app.start(workflow, run_id=run_id, queue=queue)

    async def ids(*flags: str) -> list[str]:
        proc = await cli("runs", "--json", *flags, db=store_url)
        assert proc.returncode == 0, proc.stderr
        return [r["run_id"] for r in json.loads(proc.stdout)]

    assert await ids("--workflow", "wf_a") == ["a-3", "a-2", "a-1"]
    assert await ids("--queue", "q2") == ["b-2", "a-2"]
    assert await ids("--workflow", "wf_a", "--queue", "q1") == ["a-3", "a-1"]
    assert await ids("--workflow", "wf_a", "--status", "queued", "--limit", "1") == ["a-3"]
    assert await ids("--workflow", "wf_a", "--status", "failed") == []
    assert await ids("--workflow", "nothing") == []
    text = (await cli("runs", "--workflow", "wf_b", db=store_url)).stdout
    assert "b-2" in text and "b-1" in text and "a-1" not in text


async def test_runs_takes_several_statuses(store_url: str) -> None:
    """``tether runs --status`` took one status (``purge --status`` a comma list): it
    takes a comma list, or the option repeated, and ``--limit`` keeps the newest runs
    of them all, newest first."""
    app = App(store_url)
    async with app:
        for run_id in ("r-1", "r-2", "r-3", "r-4", "r-5"):
            await app.start("wf_a", run_id=run_id)
        for run_id in ("r-2", "r-4"):  # (queued, never started: cancelled at once)
            await app.cancel(run_id)

    async def ids(*flags: str) -> list[str]:
        proc = await cli("runs", "--json", *flags, db=store_url)
        assert proc.returncode == 0, proc.stderr
        return [r["run_id"] for r in json.loads(proc.stdout)]

    assert await ids("--status", "cancelled") == ["r-4", "r-2"]
    every = ["r-5", "r-4", "r-3", "r-2", "r-1"]
    assert await ids("--status", "queued,cancelled") == every
    assert await ids("--status", "cancelled", "--status", "queued") == every
    assert await ids("--status", "queued, failed,cancelled", "--limit", "3") == every[:3]
    assert await ids("--status", "failed,completed") == []
    text = (await cli("runs", "--status", "cancelled,queued", "--limit", "2",
                      db=store_url))
    assert [ln.split()[0] for ln in text.stdout.splitlines()[1:]] == ["r-5", "r-4"]
    assert "more runs are stored" in text.stderr
    for bad, said in (("cancelled,done", "'done' is not a status; the statuses are"),
                      ("cancelled,done,blokked",  # (which of the words: a typo's place)
                       "'done' and 'blokked' are not statuses; the statuses are"),
                      (",", "not a list of statuses")):
        proc = await cli("runs", "--status", bad, db=store_url)
        assert proc.returncode == 2
        assert_one_line_error(proc, f"--status {bad!r}: {said}", "cancelled, blocked")


async def test_runs_lines_into_a_pipe_end_without_spaces(sqlite_url: str) -> None:
    """``tether runs`` into a pipe padded every cell to its column, the last one too: a
    run that waits for nothing ended its line with a space (which ``diff``, ``grep
    ' $'`` and editors show)."""
    async with App(sqlite_url) as app:
        await app.start("wf_a", run_id="a-1")
    text = (await cli("runs", db=sqlite_url)).stdout
    assert text.splitlines()[1].startswith("a-1 "), text
    assert [line for line in text.splitlines() if line != line.rstrip()] == []


async def test_show_lines_into_a_pipe_end_without_spaces(sqlite_url: str) -> None:
    """``tether show``'s row of an entry whose result is None (a step that returns
    nothing, a signal sent without data) ended with the two spaces before its empty
    RESULT cell."""
    app = App(sqlite_url)

    @app.step
    async def note() -> None:
        return None

    @app.workflow
    async def noting() -> None:
        await note()

    async with app, app.worker():
        await (await app.start(noting, run_id="n-1")).result(timeout=30)
    text = (await cli("show", "n-1", db=sqlite_url)).stdout
    assert "note" in text, text
    assert [line for line in text.splitlines() if line != line.rstrip()] == []


async def test_runs_says_when_more_are_stored_than_it_lists(sqlite_url: str) -> None:
    """``tether runs`` lists the 50 newest by default (``--limit``): with more stored it
    said nothing of them, as if those were every run. A line on stderr says so now
    (as ``tether approvals --limit`` does), the listing itself unchanged."""
    async with App(sqlite_url) as app:
        await app.start_many("wf_a", [() for _ in range(4)], run_ids=["a", "b", "c", "d"])
    listed = await cli("runs", "--limit", "3", db=sqlite_url)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 1 + 3, listed.stdout
    assert "more runs are stored than the 3 listed (the newest): --limit N lists more" \
        in listed.stderr, listed.stderr
    as_json = await cli("runs", "--limit", "3", "--json", db=sqlite_url)
    assert len(json.loads(as_json.stdout)) == 3 and "--limit N" in as_json.stderr
    every = await cli("runs", "--limit", "4", db=sqlite_url)
    assert len(every.stdout.splitlines()) == 1 + 4 and "more runs" not in every.stderr


async def test_show_of_a_blocked_run_names_the_resume_to_run(sqlite_url: str) -> None:
    """``tether show`` of a blocked run ended with "run `tether resume RUN_ID`": the
    operator had to put the id in. It gives the command for this run, quoted for a
    shell, on a line of its own (whole, to copy), in a pipe and on a terminal."""
    from tests.cli.test_fit import on_terminal
    from tests.web.test_ui_lifecycle import _blocked_run

    await _blocked_run(sqlite_url, "drift 1")
    piped = (await cli("show", "drift 1", db=sqlite_url)).stdout
    assert piped.endswith("then run\n  tether resume 'drift 1'\n"), piped
    for columns in (100, 40):
        fitted = on_terminal("show", "drift 1", db=sqlite_url, columns=columns)
        assert fitted.endswith("\n  tether resume 'drift 1'\n"), fitted


async def test_runs_json_gives_the_apis_fields(served: tuple[App, str]) -> None:
    """``tether runs --json`` gives each run the fields ``GET /api/v1/runs`` does, a
    fork's origin and the metrics among them. Before, it left out ``metrics``,
    ``forked_from`` and ``forked_at``: a fork could not be told from its listing."""
    from tether.serve._api import run_summary

    app, url = served
    await app.start("doubler", 4, run_id="src-1")
    assert await app.handle("src-1").result(timeout=30) == {"x": 4, "doubled": 8}
    await app.fork("src-1", at=1, new_run_id="src-1-fork")
    await app.handle("src-1-fork").result(timeout=30)
    proc = await cli("runs", "--json", db=url)
    assert proc.returncode == 0, proc.stderr
    listed = {r["run_id"]: r for r in json.loads(proc.stdout)}
    record = (await app.store.run_search(text="src-1-fork", limit=1))[0]
    assert set(listed["src-1-fork"]) == set(run_summary(record))
    assert (listed["src-1-fork"]["forked_from"], listed["src-1-fork"]["forked_at"]) == (
        "src-1", 1)
    assert (listed["src-1"]["forked_from"], listed["src-1"]["forked_at"]) == (None, None)
    assert listed["src-1-fork"]["metrics"] == record.metrics


def test_missing_sqlite_store_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing.db"
    assert_one_line_error(tether_cli("runs", db=url), "missing.db")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("command", [("runs",), ("show", "x"), ("start", "wf")])
def test_unreachable_postgres(command: tuple[str, ...]) -> None:
    proc = tether_cli(*command, db="postgresql://postgres@127.0.0.1:1/nowhere", timeout=90)
    assert_one_line_error(proc, "127.0.0.1", "1")


def test_a_worker_stopped_while_its_database_is_unreachable_exits_cleanly(
        tmp_path: Path) -> None:
    """``tether worker`` whose database is down at start tries again (the worker's own
    start does it now, as an embedded worker's does); SIGTERM during those tries ends
    the process with exit 0 and no traceback, as before."""
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once it is closed
    env = dict(os.environ)
    env.pop("TETHER_DATABASE_URL", None)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = forked.Popen([sys.executable, "-m", "tether", "worker", "tests.cli.cli_app:app",
                             "--db", f"postgresql://postgres@127.0.0.1:{port}/nowhere"],
                            cwd=forked.ROOT, env=env, stdout=out, stderr=out)
    try:
        for _ in range(1200):  # (a bounded wait for the log, not a timing assertion)
            if "(attempt 2)" in log.read_text() or proc.poll() is not None:
                break
            time.sleep(0.05)
        text = log.read_text()
        assert proc.poll() is None, text
        assert f"store unavailable: PostgreSQL at 127.0.0.1:{port} is unavailable" in text
        assert "retrying in 0.5 s (attempt 1)" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in log.read_text()


def test_serve_on_an_unreachable_postgres_is_one_line() -> None:
    """``tether serve --wait-for-store 0`` with its database unreachable at start: one
    error line and exit 1 like every other command (it was the ASGI lifespan's
    traceback and exit 3). Without the flag it waits for the store, serving 503s
    meanwhile (``tests/web/test_store_at_start.py``)."""
    proc = tether_cli("serve", "--port", "65001", "--wait-for-store", "0",
                      db="postgresql://postgres@127.0.0.1:1/nowhere", timeout=90)
    assert_one_line_error(proc, "127.0.0.1", "unavailable")
    assert proc.returncode == 1


def test_serve_on_a_port_in_use_exits_1_with_an_error_line(tmp_path: Path) -> None:
    """A port already bound: uvicorn's log line says why, then ``tether: error:`` and
    exit 1 (uvicorn's own exit 3 is what ``tether result`` means by "not ended"). The
    start line ("serving ... on http://HOST:PORT") is not logged: until 2026-12-06 it
    came before the address was bound, so a port in use said it served, then failed."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = tether_cli("serve", "--port", str(port), db=f"sqlite:///{tmp_path}/s.db")
    assert_one_line_error(proc, f"127.0.0.1:{port}")
    assert proc.returncode == 1 and "address already in use" in proc.stderr
    assert "serving " not in proc.stderr and "MCP at" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(("spec", "needle"), [
    ("tests.cli.cli_app:appp", "'tests.cli.cli_app' has no attribute 'appp'"),
    ("tests.cli.cli_app:noop", "'tests.cli.cli_app:noop' is of type"),
])
def test_an_app_spec_that_names_no_app_says_what_it_names(
        spec: str, needle: str, tmp_path: Path) -> None:
    """A typo in ``MODULE:APP`` says the attribute is missing and which App objects the
    module has (it said "is not a tether.App" for a name that does not exist)."""
    proc = tether_cli("start", "noop", "--app", spec, db=f"sqlite:///{tmp_path}/a.db")
    assert_one_line_error(proc, needle, "its App objects: app")


async def test_a_signal_of_another_name_than_the_awaited_one_is_warned_of(
        served: tuple[App, str]) -> None:
    """``tether signal RUN reveiw`` to a run waiting for ``review`` stores the signal
    (signals queue until a wait of their name takes them) and said only "sent", while
    the run went on waiting, for ever: a warning names the signal the run waits for.
    The awaited name gets none."""
    app, url = served
    await app.start("approval", run_id="a-1")
    await _waiting(app, "a-1")
    typo = await cli("signal", "a-1", "aprove", "--data", "{}", db=url)
    assert typo.returncode == 0, typo.stderr
    assert typo.stdout.strip() == "a-1: signal 'aprove' sent"
    assert ("run 'a-1' waits for signal 'approve', not 'aprove': this signal is kept until "
            "a wait of its name takes it (a typo?)") in typo.stderr
    right = await cli("signal", "a-1", "approve", "--data", '{"ok": 1}', db=url)
    assert right.returncode == 0 and "warning" not in right.stderr.lower(), right.stderr
    assert await app.handle("a-1").result(timeout=30) == {"ok": 1}
    unknown = await cli("signal", "d-9", "approve", "--data", "{}", db=url)
    assert unknown.returncode == 1 and "waits for signal" not in unknown.stderr


def refund_app(url: str) -> tuple[App, Any]:
    """An app whose workflow ``refund`` asks an approval (id ``a``) of a payment of its
    ``amount`` to the tool ``pay``, and returns the answer."""
    from tether.ai import request_approval

    app = App(url)

    @app.workflow(name="refund")
    async def refund(amount: int) -> object:
        decision = await request_approval("pay", {"amount": amount}, "over $100",
                                          approval_id="a")
        return decision.approved

    return app, refund


async def test_a_signal_that_is_no_answer_to_an_awaited_approval_is_warned_of(
        store_url: str) -> None:
    """A run waiting for an approval lists as waiting for ``signal approval``; ``tether
    signal RUN approval`` with data that is no answer (no ``"approved"`` boolean) said
    "sent", and the run took it, found no answer and waited on, silently: a warning
    names ``tether approve``. An answer sent as a signal gets none, and is taken."""
    app, refund = refund_app(store_url)

    async with app, app.worker(poll_interval=0.1):
        from tether.ai import pending_approval

        await app.start(refund, 500, run_id="rf-1")
        for _ in range(600):
            if await pending_approval(app, "rf-1") is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("run rf-1 never asked for its approval")
        wrong = await cli("signal", "rf-1", "approval", "--data", '{"ok": true}',
                          db=store_url)
        assert wrong.returncode == 0, wrong.stderr
        assert wrong.stdout.strip() == "rf-1: signal 'approval' sent"
        assert ("tether: warning: run 'rf-1' waits for an approval of pay: a signal "
                "'approval' without \"approved\": true or false in its data is no answer, "
                "and the run waits on; answer it with `tether approve rf-1` (or --reject)"
                ) in wrong.stderr.splitlines(), wrong.stderr
        right = await cli("signal", "rf-1", "approval", "--data", '{"approved": true}',
                          db=store_url)
        assert right.returncode == 0 and right.stderr == "", right.stderr
        assert await app.handle("rf-1").result(timeout=30) is True


def thrifty_app(url: str) -> tuple[App, Any]:
    """An app whose workflow ``thrifty`` sets a budget of 5 tokens before its one model
    call: the call is refused (no request sent) and the run waits on its budget."""
    from tether.ai import LLM, Budget, set_budget, user_message

    app = App(url)
    llm = LLM("openai:gpt-4.1-mini", base_url="http://127.0.0.1:9/v1", api_key="k")

    @app.workflow(name="thrifty")
    async def thrifty(question: str) -> str:
        set_budget(Budget(tokens=5))  # the first call is refused: no request is sent
        reply = await llm.chat([user_message(question)])
        return reply.text or ""

    return app, thrifty


async def waiting_on_budget(app: App, run_id: str, after: int) -> dict[str, object]:
    """``run_id``'s live status once it waits on its budget having taken ``after``
    budget signals."""
    for _ in range(600):
        info = await app.get_run(run_id)
        taken = [e for e in info.journal if e["name"] == "budget"]
        if info.waiting_for == "signal budget" and len(taken) == after:
            assert isinstance(info.status_info, dict)
            return info.status_info
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never waited on its budget")


async def test_a_budget_signal_that_gives_no_limit_is_warned_of(store_url: str) -> None:
    """A run waiting on its LLM budget lists as waiting for ``signal budget``; ``tether
    signal RUN budget`` with data that gives no limit (``{"tokens": "5000"}``, text)
    said "sent", and the run took it, changed nothing and waited on, silently: a warning
    names ``tether budget``. Data that gives a limit gets none of that, and is taken (too
    few tokens for the next call's estimate are warned of, with the limit that lets the
    run go on)."""
    app, thrifty = thrifty_app(store_url)

    async with app, app.worker(poll_interval=0.1):
        await app.start(thrifty, "q", run_id="th-1")
        await waiting_on_budget(app, "th-1", 0)
        wrong = await cli("signal", "th-1", "budget", "--data", '{"tokens": "5000"}',
                          db=store_url)
        assert wrong.returncode == 0, wrong.stderr
        assert wrong.stdout.strip() == "th-1: signal 'budget' sent"
        assert ("tether: warning: run 'th-1' waits for a raise of its LLM budget: a signal "
                "'budget' whose data gives no limit (\"usd\": a number >= 0 and/or "
                "\"tokens\": a number >= 0) changes nothing, and the run waits on; raise it "
                "with `tether budget th-1 --usd X --tokens N`") in wrong.stderr.splitlines(), \
            wrong.stderr
        await waiting_on_budget(app, "th-1", 1)
        right = await cli("signal", "th-1", "budget", "--data", '{"tokens": 6}',
                          db=store_url)
        # (a limit, taken: too few for the next call's estimate, which is said)
        assert right.returncode == 0 and right.stderr.splitlines() == [
            "tether: warning: run 'th-1' takes these limits and waits on: the new token "
            "limit, 6 tokens, is under the 0 tokens it has spent + ~8 tokens for its next "
            "call; a token limit of at least 8 tokens lets it go on"], right.stderr
        assert (await waiting_on_budget(app, "th-1", 2))["budget_tokens"] == 6
        await app.cancel("th-1")


async def test_runs_parent_lists_a_runs_children(sqlite_url: str) -> None:
    """``tether runs --parent RUN`` lists the child runs of RUN (an agent's tools that
    are workflows), as the API's ``parent=`` does: ``tether runs`` had no such filter,
    and a tool run was found only by its id's prefix. A parent that names no run is
    warned of; an empty one is no filter, as ``--workflow ''``."""
    app = App(sqlite_url)

    @app.workflow(name="tool")
    async def tool(n: int) -> int:
        return n * 2

    @app.workflow(name="lead")
    async def lead() -> int:
        first = await tether.start_child(tool, 1)
        second = await tether.start_child(tool, 2)
        return await first.result() + await second.result()

    try:
        async with app.worker(poll_interval=0.05):
            await app.start(lead, run_id="p-1")
            await app.start(tool, 5, run_id="other")
            assert await app.handle("p-1").result(timeout=30) == 6
            await app.handle("other").result(timeout=30)
    finally:
        await app.close()
    got = await cli("runs", "--parent", "p-1", "--json", db=sqlite_url)
    assert got.returncode == 0, got.stderr
    assert sorted((r["run_id"], r["parent_run_id"]) for r in json.loads(got.stdout)) == [
        ("p-1.0", "p-1"), ("p-1.1", "p-1")], got.stdout
    table = await cli("runs", "--parent", "p-1", db=sqlite_url)
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == ["p-1.1", "p-1.0"]
    none = await cli("runs", "--parent", "p-9", db=sqlite_url)
    assert none.returncode == 0 and none.stdout == "no runs\n", none.stdout
    assert ("tether: warning: no run 'p-9' in this store: --parent takes the id of the run "
            "whose children to list") in none.stderr.splitlines(), none.stderr
    every = await cli("runs", "--parent", "", "--json", db=sqlite_url)
    assert len(json.loads(every.stdout)) == 4, every.stdout


async def test_show_of_a_run_waiting_for_a_child_says_what_the_child_is_doing(
        sqlite_url: str) -> None:
    """``tether show PARENT`` of a run waiting for a child (an agent's tool run) said
    ``waiting for: child P.0`` alone, the same whether the child worked, waited for a
    person, or sat queued where no worker looks (its worker killed and not restarted):
    a line under it says what the child is doing."""
    app = App(sqlite_url)

    @app.workflow(name="far_tool", queue="far")
    async def far_tool() -> int:
        return 1

    @app.workflow(name="asking_tool")
    async def asking_tool() -> object:
        return await tether.wait_for_signal("go")

    @app.workflow(name="lead_far")
    async def lead_far() -> object:
        return await (await tether.start_child(far_tool)).result()

    @app.workflow(name="lead_asking")
    async def lead_asking() -> object:
        return await (await tether.start_child(asking_tool)).result()

    async def waits(run_id: str, on: str) -> None:
        for _ in range(600):
            if (await app.get_run(run_id)).waiting_for == on:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"run {run_id} never waited for {on}")

    try:
        async with app.worker(queues=["default"], poll_interval=0.05):
            await app.start(lead_far, run_id="lf-1")
            await app.start(lead_asking, run_id="la-1")
            await waits("lf-1", "child lf-1.0")
            await waits("la-1.0", "signal go")
            await waits("la-1", "child la-1.0")
            far = await cli("show", "lf-1", db=sqlite_url)
            asking = await cli("show", "la-1", db=sqlite_url)
            await app.cancel("lf-1")
            await app.cancel("la-1")
    finally:
        await app.close()
    assert far.stdout.splitlines()[3] == (
        "  the child is queued in queue far, which no live worker serves (tether worker "
        "MODULE:APP --queue far)"), far.stdout
    assert asking.stdout.splitlines()[3] == "  the child is waiting for signal go", \
        asking.stdout


async def test_budget_that_leaves_the_limit_the_run_stopped_at_is_warned_of(
        store_url: str) -> None:
    """``tether budget RUN --usd 5`` to a run stopped at its token limit said "set to
    $5.00" alone, and the run took the new limit and waited on (as for a new limit not
    above what it spent): a warning says why it waits on and what lets it go on. A raise
    of the limit it stopped at gets none."""
    app, thrifty = thrifty_app(store_url)

    async with app, app.worker(poll_interval=0.1):
        await app.start(thrifty, "q", run_id="th-3")
        await waiting_on_budget(app, "th-3", 0)
        usd = await cli("budget", "th-3", "--usd", "5", db=store_url)
        assert usd.returncode == 0 and usd.stdout == "budget of run th-3 set to $5.00\n"
        assert usd.stderr.splitlines() == [
            "tether: warning: run 'th-3' takes these limits and waits on: it stopped at its "
            "token limit (0 tokens spent of 5 tokens), which this raise leaves as it was; a "
            "token limit of at least 8 tokens (0 tokens spent + ~8 tokens for its next "
            "call) lets it go on"], usd.stderr
        await waiting_on_budget(app, "th-3", 1)
        zero = await cli("budget", "th-3", "--tokens", "0", db=store_url)
        assert zero.stderr.splitlines() == [
            "tether: warning: run 'th-3' takes these limits and waits on: the new token "
            "limit, 0 tokens, is not above the 0 tokens it has spent; a token limit of at "
            "least 8 tokens (0 tokens spent + ~8 tokens for its next call) lets it go on"
        ], zero.stderr
        await waiting_on_budget(app, "th-3", 2)
        # (above what it spent, but too few for its next call's estimate: it said
        # nothing, and the run waited on)
        short = await cli("budget", "th-3", "--tokens", "7", db=store_url)
        assert short.returncode == 0 and short.stderr.splitlines() == [
            "tether: warning: run 'th-3' takes these limits and waits on: the new token "
            "limit, 7 tokens, is under the 0 tokens it has spent + ~8 tokens for its next "
            "call; a token limit of at least 8 tokens lets it go on"], short.stderr
        await waiting_on_budget(app, "th-3", 3)
        await app.cancel("th-3")


async def test_budget_that_leaves_the_limit_an_estimate_went_over_is_warned_of(
        store_url: str) -> None:
    """A budget of both kinds (5 tokens, $10) whose first call's estimate goes over the
    token limit, none spent: ``tether budget RUN --usd 20`` said "set to $20.00" alone
    (the wait did not say which limit refused the call, and it had spent neither), and
    the run took it and waited on. The wait's status now names the limit
    (``blocked_by``), and the raise of the other one is warned of; a raise of the token
    limit gets no warning."""
    from tether.ai import LLM, Budget, set_budget, user_message

    app = App(store_url)
    llm = LLM("openai:gpt-4.1-mini", base_url="http://127.0.0.1:9/v1", api_key="k")

    @app.workflow(name="thrifty_both")
    async def thrifty_both(question: str) -> str:
        set_budget(Budget(tokens=5, usd=10.0))  # the first call is refused: no request
        reply = await llm.chat([user_message(question)])
        return reply.text or ""

    async with app, app.worker(poll_interval=0.1):
        await app.start(thrifty_both, "q", run_id="tb-1")
        status = await waiting_on_budget(app, "tb-1", 0)
        assert status["blocked_by"] == ["tokens"], status
        assert (status["spent_tokens"], status["budget_tokens"]) == (0, 5), status
        usd = await cli("budget", "tb-1", "--usd", "20", db=store_url)
        assert usd.returncode == 0 and usd.stdout == "budget of run tb-1 set to $20.00\n"
        assert usd.stderr.splitlines() == [
            "tether: warning: run 'tb-1' takes these limits and waits on: it stopped at its "
            "token limit (0 tokens spent of 5 tokens), which this raise leaves as it was; a "
            "token limit of at least 8 tokens (0 tokens spent + ~8 tokens for its next "
            "call) lets it go on"], usd.stderr
        status = await waiting_on_budget(app, "tb-1", 1)
        assert status["budget_usd"] == 20.0 and status["blocked_by"] == ["tokens"], status
        right = await cli("budget", "tb-1", "--tokens", "6", db=store_url)
        assert right.returncode == 0 and right.stderr.splitlines() == [
            "tether: warning: run 'tb-1' takes these limits and waits on: the new token "
            "limit, 6 tokens, is under the 0 tokens it has spent + ~8 tokens for its next "
            "call; a token limit of at least 8 tokens lets it go on"], right.stderr
        await waiting_on_budget(app, "tb-1", 2)  # (6 tokens: too few for the prompt)
        await app.cancel("tb-1")


async def test_runs_and_show_say_an_approval_in_words(store_url: str) -> None:
    """A run waiting for an approval read ``signal approval`` in ``tether runs``' WAITING
    FOR and ``tether show``'s "waiting for" (its ``waiting_for``, the signal that
    answers it): they say ``approval of TOOL`` (show: and, under it, the command that
    answers it), on a
    pipe and on a terminal. ``--json`` keeps ``waiting_for`` as it is; a plain wait for
    a signal named ``approval`` (no approval asked) keeps its words too."""
    from tests.cli.test_fit import on_terminal
    from tether.ai import approve, pending_approval

    app, refund = refund_app(store_url)

    @app.workflow(name="plain")
    async def plain() -> object:
        return await tether.wait_for_signal("approval")

    async with app, app.worker(poll_interval=0.1):
        await app.start(refund, 500, run_id="ap-1")
        await app.start(plain, run_id="ap-2")
        for _ in range(600):
            if await pending_approval(app, "ap-1") is not None \
                    and (await app.get_run("ap-2")).status is tether.RunStatus.WAITING:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the runs never waited")
        rows = {line.split()[0]: line for line in
                (await cli("runs", db=store_url)).stdout.splitlines()[1:]}
        assert rows["ap-1"].split()[3] == "waiting" and rows["ap-1"].endswith(
            " approval of pay"), rows
        assert rows["ap-2"].endswith(" signal approval"), rows
        fitted = await asyncio.to_thread(on_terminal, "runs", db=store_url, columns=120)
        assert next(ln for ln in fitted.splitlines() if ln.startswith("ap-1 ")).endswith(
            " approval of pay"), fitted
        listed = {r["run_id"]: r for r in json.loads(
            (await cli("runs", "--json", db=store_url)).stdout)}
        assert listed["ap-1"]["waiting_for"] == "signal approval", listed
        shown = (await cli("show", "ap-1", db=store_url)).stdout.splitlines()
        at = next(i for i, line in enumerate(shown) if line.startswith("waiting for:"))
        assert re.fullmatch(r"waiting for: approval of pay \(since [^)]+\)", shown[at]), shown
        assert shown[at + 2].startswith("  answer: tether approve ap-1 --approval-id a "), shown
        plain_shown = (await cli("show", "ap-2", db=store_url)).stdout
        assert "waiting for: signal approval" in plain_shown, plain_shown
        await app.signal("ap-2", "approval", 1)
        await approve(app, "ap-1")
        assert await app.handle("ap-1").result(timeout=30) is True


async def test_budget_of_an_ended_run_says_the_budget_was_not_changed(
        served: tuple[App, str]) -> None:
    """``tether budget RUN --usd 5`` of a run that has ended is a one-line error about
    the budget: it said "signal 'budget' not sent", naming a signal the user never sent
    (the command's means, not its meaning)."""
    app, url = served
    await (await app.start("doubler", 1, run_id="bd-1")).result(timeout=30)
    got = await cli("budget", "bd-1", "--usd", "5", db=url)
    assert_one_line_error(got, "run 'bd-1' has ended (completed): its budget was not changed")
    assert got.returncode == 1 and "signal" not in got.stderr


async def test_budget_says_the_new_limits_as_a_person_reads_them(
        served: tuple[App, str]) -> None:
    """``tether budget`` said ``usd 5, tokens 500000``: now dollars with their cents
    and tokens grouped by thousands; the signal sent carries the numbers as given."""
    app, url = served
    await app.start("approval", run_id="bg-1")
    for argv, says in ((("--usd", "5", "--tokens", "500000"), "$5.00 and 500,000 tokens"),
                       (("--usd", "0.005"), "$0.005"),
                       (("--usd", "1250.5"), "$1,250.50"),
                       (("--tokens", "1"), "1 token")):
        got = await cli("budget", "bg-1", *argv, db=url)
        assert got.returncode == 0, got.stderr
        assert got.stdout == f"budget of run bg-1 set to {says}\n", got.stdout
    info = await app.get_run("bg-1")
    assert info.status is tether.RunStatus.WAITING  # (it waits for approve, not budget)


async def test_a_start_on_a_queue_no_worker_serves_is_warned_of(
        served: tuple[App, str]) -> None:
    """``tether start doubler --queue defualt`` (a typo) queued the run where no worker
    of the store looks, silently, while ``doubler`` is registered on ``default``: the
    run waited for ever. A warning now names the queue the workflow is registered on.
    A queue a worker serves gets none."""
    _, url = served
    typo = await cli("start", "doubler", "--queue", "defualt", "--input", "[1]", db=url)
    assert typo.returncode == 0, typo.stderr
    assert ("no worker of this store serves queue 'defualt', where this run waits; "
            "workflow 'doubler' is registered on queue 'default'") in typo.stderr
    fine = await cli("start", "doubler", "--queue", "default", "--input", "[1]", db=url)
    assert fine.returncode == 0 and "warning" not in fine.stderr.lower(), fine.stderr


async def test_runs_of_a_workflow_no_worker_registered_is_warned_of(
        served: tuple[App, str]) -> None:
    """``tether runs --workflow doublr`` (a typo) answered "no runs", as for a workflow
    that has none yet: a warning says no worker has registered the name, with the
    closest one. A registered workflow without runs gets "no runs" alone."""
    _, url = served
    typo = await cli("runs", "--workflow", "doublr", db=url)
    assert typo.returncode == 0 and typo.stdout == "no runs\n", typo
    assert ("no worker has registered workflow 'doublr' in this store (did you mean "
            "'doubler'?)") in typo.stderr
    none_yet = await cli("runs", "--workflow", "doubler", db=url)
    assert none_yet.stdout == "no runs\n" and "warning" not in none_yet.stderr.lower(), none_yet


async def test_runs_of_a_queue_nothing_is_on_is_warned_of(served: tuple[App, str]) -> None:
    """``tether runs --queue defualt`` (a typo) answered "no runs" alone, where
    ``--workflow`` warns of a name no worker registered: a warning says no registered
    workflow is on the queue, with the closest queue. A queue of a registered workflow,
    or one with a limit, gets "no runs" alone."""
    app, url = served
    typo = await cli("runs", "--queue", "defualt", db=url)
    assert typo.returncode == 0 and typo.stdout == "no runs\n", typo
    assert ("no workflow a worker registered is on queue 'defualt', and it has no limit "
            "(did you mean 'default'?)") in typo.stderr, typo.stderr
    await app.set_queue_limit("email", 0)
    for queue in ("default", "email"):
        quiet = await cli("runs", "--queue", queue, db=url)
        assert quiet.stdout == "no runs\n" and "warning" not in quiet.stderr.lower(), quiet


async def _waiting(app: App, run_id: str) -> None:
    for _ in range(600):
        if (await app.get_run(run_id)).status is tether.RunStatus.WAITING:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never waited")


@pytest.mark.parametrize("url", ["mysql://x/y", "tether.db"])
def test_unknown_scheme(url: str) -> None:
    """A ``--db`` no store takes is a malformed argument (exit 2), as an empty one is:
    it was exit 1, the code of a store that failed. From ``$TETHER_DATABASE_URL`` it is
    the configuration's error (exit 1)."""
    proc = tether_cli("runs", db=url)
    said = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert proc.returncode == 2 and said == [
        f"tether runs: error: argument --db: unsupported store URL {url!r}: use "
        "sqlite:///path.db or postgresql://host/db"], proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    configured = forked.run([sys.executable, "-m", "tether", "runs"], capture_output=True,
                            text=True, timeout=60, env={**env, "TETHER_DATABASE_URL": url})
    assert_one_line_error(configured, "unsupported store URL")
    assert configured.returncode == 1


def test_help_lists_the_commands() -> None:
    proc = tether_cli("--help", db=None)
    assert proc.returncode == 0
    for name in ("worker", "start", "runs", "show", "cancel", "result", "signal", "resume"):
        assert name in proc.stdout


async def test_result_wait_zero_returns_an_ended_run(served: tuple[App, str]) -> None:
    app, url = served
    await (await app.start("doubler", 2, run_id="z")).result(timeout=30)
    got = await cli("result", "z", "--wait", "0", db=url)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"x": 2, "doubled": 4}
    assert await app.handle("z").result(timeout=0) == {"x": 2, "doubled": 4}
    bad = await cli("result", "z", "--wait", "-1", db=url)
    assert bad.returncode == 2 and "--wait" in bad.stderr and "Traceback" not in bad.stderr


async def test_result_wait_that_runs_out_says_why(served: tuple[App, str]) -> None:
    """``tether result X --wait N`` whose wait runs out says the run's status, and for a
    run of a workflow no worker of the store has registered (a typo'd name, workers not
    started) that no worker has it: it said only "did not end within N s", which a new
    user reads as a slow worker and waits again."""
    app, url = served
    await app.start("typod_flow", run_id="t-1")
    got = await cli("result", "t-1", "--wait", "0.2", db=url)
    assert_one_line_error(got, "run 't-1' did not end within 0.2 s (status queued; no worker "
                          "has registered workflow 'typod_flow' in this store")
    assert got.returncode == 3
    await app.start("approval", run_id="w-1")
    await _waiting(app, "w-1")
    got = await cli("result", "w-1", "--wait", "0", db=url)
    assert_one_line_error(got, "run 'w-1' did not end within 0 s (status waiting)")
    assert got.returncode == 3


async def test_input_is_shown_as_the_arguments_given(served: tuple[App, str]) -> None:
    app, url = served
    await (await app.start("doubler", 5, run_id="in")).result(timeout=30)
    doc = json.loads((await cli("show", "in", "--json", db=url)).stdout)
    assert doc["input"] == [5]


async def test_cancel_of_an_ended_run(served: tuple[App, str]) -> None:
    app, url = served
    await (await app.start("doubler", 1, run_id="ended")).result(timeout=30)
    assert_one_line_error(await cli("cancel", "ended", db=url), "already ended")


async def test_cancel_of_a_waiting_run_with_no_worker_says_it_is_pending(
        store_url: str) -> None:
    """A waiting run cancelled while no worker serves its queue stays ``waiting``: the
    cancel is delivered by a worker's replay, at the wait, where the workflow may catch
    ``Cancelled`` and clean up. Every view says the cancel is pending until then
    (``cancel_requested``; before, nothing told it from a run nobody had cancelled, and
    ``tether cancel`` did not say a worker was needed), and a worker then ends it
    ``cancelled`` and the flag goes."""
    app = make_app(store_url)
    try:
        async with app.worker(poll_interval=0.1):
            await app.start("approval", run_id="w-1")
            info = await app.get_run("w-1")
            while info.status is not tether.RunStatus.WAITING:
                await asyncio.sleep(0.05)
                info = await app.get_run("w-1")
        assert info.cancel_requested is False
        said = await cli("cancel", "w-1", db=store_url)
        assert said.returncode == 0, said.stderr
        assert said.stdout.strip() == ("w-1: cancel requested (status waiting); it ends "
                                       "cancelled when a worker serving queue 'default' "
                                       "replays it")
        assert json.loads((await cli("cancel", "w-1", "--json", db=store_url)).stdout) == {
            "run_id": "w-1", "status": "waiting", "cancel_reason": None}
        doc = json.loads((await cli("show", "w-1", "--json", db=store_url)).stdout)
        assert (doc["status"], doc["cancel_requested"]) == ("waiting", True)
        listed = json.loads((await cli("runs", "--json", db=store_url)).stdout)
        assert [(r["status"], r["cancel_requested"]) for r in listed] == [("waiting", True)]
        assert "signal approve; cancel requested" in (await cli("runs", db=store_url)).stdout
        text = (await cli("show", "w-1", db=store_url)).stdout
        asked = (await app.get_run("w-1")).cancel_requested_at
        assert asked is not None and doc["cancel_requested_at"] == asked
        # (since when, as the ages of `tether workers`; then what it waits for)
        assert re.search(r"^cancel requested \d+ s ago \(" + re.escape(fmt_time(asked))
                         + r"\): it ends cancelled when a worker serving queue 'default' "
                         "replays it$", text, re.M), text
        assert (await app.get_run("w-1")).cancel_requested is True
        async with app.worker(poll_interval=0.1):
            with pytest.raises(tether.RunFailed):
                await app.handle("w-1").result(timeout=30)
        info = await app.get_run("w-1")
        assert (info.status, info.cancel_requested) == (tether.RunStatus.CANCELLED, False)
        doc = json.loads((await cli("show", "w-1", "--json", db=store_url)).stdout)
        assert (doc["cancel_requested"], doc["cancel_requested_at"]) == (False, asked)
    finally:
        await app.close()


async def test_show_of_a_run_whose_step_ignores_its_cancel_says_since_when(
        store_url: str) -> None:
    """A running run whose step catches ``CancelledError`` goes on after its cancel:
    ``tether show`` says since when the cancel was requested and which step has not
    stopped (it said "cancel requested" alone, the same a second or an hour after), and
    ``show --json`` gives the request's time; a second cancel keeps the first's."""
    app = App(store_url)
    release = asyncio.Event()

    @app.step
    async def deaf() -> int:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # (the cancel, ignored)
        return 1

    @app.workflow(name="stubborn")
    async def stubborn() -> int:
        got = await deaf()
        await tether.sleep(0.01)  # (its next operation: the cancel ends the run there)
        return got

    try:
        async with app.worker(poll_interval=0.1):
            try:
                await app.start("stubborn", run_id="s-1")
                while not (await run_document(app, "s-1"))["in_flight"]:
                    await asyncio.sleep(0.05)
                await app.cancel("s-1")
                text = (await cli("show", "s-1", db=store_url)).stdout
                doc = json.loads((await cli("show", "s-1", "--json", db=store_url)).stdout)
                assert (await cli("cancel", "s-1", db=store_url)).returncode == 0
                again = (await app.get_run("s-1")).cancel_requested_at
            finally:
                release.set()  # (the worker's drain would wait for the step for ever)
            with pytest.raises(tether.RunFailed):
                await app.handle("s-1").result(timeout=30)
    finally:
        await app.close()
    asked = doc["cancel_requested_at"]
    assert isinstance(asked, float) and again == asked
    assert (doc["status"], doc["cancel_requested"]) == ("running", True)
    assert re.search(r"^cancel requested \d+ s ago \(" + re.escape(fmt_time(asked))
                     + r"\); the run has not stopped: its step 'deaf' is still running "
                     r"\(a cancel interrupts a step at its next await; one that catches "
                     r"CancelledError or blocks its worker's event loop runs on\)$",
                     text, re.M), text


async def test_result_of_a_cancelled_run_says_it_once(store_url: str) -> None:
    """``tether result`` of a cancelled run is one statement: the run, when it was
    cancelled, and on whose request, its own or its parent's, with the request's time
    (it said "run 'w-1' ended cancelled: tether.errors.Cancelled: run 'w-1' was
    cancelled"); of an erased run, when it was erased (it said "ended erased:
    tether.errors.RunErased: its payloads were erased"). The exit status stays 1."""
    app = make_app(store_url)

    @app.workflow(name="parent")
    async def parent() -> object:
        child = await tether.start_child("approval", run_id="kid-1")
        return await child.result()

    try:
        async with app.worker(poll_interval=0.1):
            await app.start("approval", run_id="w-1")
            await app.start("parent", run_id="p-1")
            await _waiting(app, "w-1")
            await _waiting(app, "kid-1")
            await app.cancel("w-1")
            await app.cancel("p-1")
            for run_id in ("w-1", "p-1", "kid-1"):
                with pytest.raises(tether.RunFailed):
                    await app.handle(run_id).result(timeout=30)
        own, kid, pa = [await app.get_run(run_id) for run_id in ("w-1", "kid-1", "p-1")]
        said = {run_id: await cli("result", run_id, db=store_url)
                for run_id in ("w-1", "kid-1")}
        assert (await cli("erase", "w-1", db=store_url)).returncode == 0
        erased = await cli("result", "w-1", db=store_url)
    finally:
        await app.close()
    assert pa.cancel_requested_at is not None and kid.cancel_requested_at is not None
    assert pa.cancel_requested_at <= kid.cancel_requested_at
    for proc in (*said.values(), erased):
        assert (proc.returncode, proc.stdout) == (1, ""), proc
    assert said["w-1"].stderr.splitlines() == [
        f"tether: error: run 'w-1' was cancelled at {fmt_time(own.finished_at)}, on a "
        f"cancel requested at {fmt_time(own.cancel_requested_at)}"]
    assert said["kid-1"].stderr.splitlines() == [
        f"tether: error: run 'kid-1' was cancelled at {fmt_time(kid.finished_at)} with its "
        f"parent run 'p-1', whose cancel was requested at "
        f"{fmt_time(pa.cancel_requested_at)}"]
    (line,) = erased.stderr.splitlines()
    assert re.fullmatch(r"tether: error: run 'w-1' was erased at \S+ \S+ \(tether erase\): "
                        r"its result is gone \(it ended cancelled\)", line), line


@pytest.mark.parametrize("flags", [("--concurrency", "0"), ("--lease", "0"),
                                   ("--lease", "-3")])
def test_worker_rejects_bad_numbers_without_a_traceback(
        flags: tuple[str, str], tmp_path: Path) -> None:
    proc = tether_cli("worker", "tests.cli.test_cli:nothing", *flags,
                      db=f"sqlite:///{tmp_path}/w.db", timeout=30)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and flags[0] in proc.stderr


def test_worker_on_a_sqlite_path_that_cannot_exist_exits(tmp_path: Path) -> None:
    """A missing folder is a configuration error: one line and an exit, not retries."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = forked.run(
        [sys.executable, "-m", "tether", "worker", "tests.cli.cli_app:app",
         "--db", f"sqlite:///{tmp_path}/no/such/folder/x.db"],
        capture_output=True, text=True, timeout=60, env=env)
    assert_one_line_error(proc, "no folder")


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/p.db"

    async def fill() -> None:
        app = make_app(url)
        async with app:
            for i in range(300):
                await app.start("doubler", i)

    asyncio.run(fill())
    argv = f"{sys.executable} -m tether runs --db {url} --limit 300 | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", argv], capture_output=True,
                          text=True, timeout=60)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


async def test_show_prints_child_ids_whole(sqlite_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``child_result`` entry is named by the child's run id, and a ``child_start``
    entry's result is that id: ``tether show`` prints both whole, on an 80-column
    terminal too, widening the NAME column (it cut names at 24 characters: the child
    of ``order-7f3a9c2e-41d2-4b8e-9c1a-2f6e8d0b5a17`` showed as
    ``order-7f3a9c2e-41d2-4b8…``), and a child id of more than 70 characters in the
    result column."""
    app = App(sqlite_url)
    long_id = "customer-onboarding-2024-11-research-subagent-7f3a9c1b-e5d4-4c3b-a291-0f8e7d6c"

    @app.workflow
    async def kid(n: int) -> int:
        return n + 1

    @app.workflow
    async def parent() -> list[int]:
        first = await tether.call(kid, 1)  # its id: "<parent id>.0"
        other = await tether.start_child(kid, 2, run_id=long_id)
        return [first, await other.result()]

    parent_id = "order-7f3a9c2e-41d2-4b8e-9c1a-2f6e8d0b5a17"
    async with app, app.worker(poll_interval=0.05):
        assert await (await app.start(parent, run_id=parent_id)).result(timeout=30) == [2, 3]
    monkeypatch.setenv("COLUMNS", "80")
    shown = await cli("show", parent_id, db=sqlite_url)
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout, shown.stdout
    lines = [line for line in shown.stdout.splitlines() if line[:4].strip().isdigit()]
    cells = [line.split() for line in lines]
    children = [f"{parent_id}.0", long_id]
    assert [c[-1] for c in cells if c[1] == "child_start"] == children, shown.stdout
    assert [c[2] for c in cells if c[1] == "child_result"] == children, shown.stdout
    header = next(line for line in shown.stdout.splitlines() if line.lstrip().startswith("POS"))
    # One NAME column, wide enough for every name: each row's name and status start
    # under their headings.
    name_at = header.index("NAME")
    assert ({line.index(c[2], name_at - 1) for line, c in zip(lines, cells, strict=True)}
            == {name_at})
    assert {line.index(" ok ") + 1 for line in lines} == {header.index("STATUS")}


def test_demo_help_says_which_store_it_uses() -> None:
    # ``--db`` comes with every command, and its help named the store the demo would
    # use; the demo always made a temporary store of its own and ignored it, silently.
    # Then the help said so, and still listed ``--db URL`` with the store's help: now it
    # is not listed (still taken, for scripts that pass it, and said to be unused).
    shown = tether_cli("demo", "--help", db=None)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert ("The demo runs on a SQLite store of its own in a new temporary folder (it "
            "prints the path): $TETHER_DATABASE_URL is not used.") in text
    assert "--db" not in text and "--log-format" in text
    taken = tether_cli("demo", "--db", "sqlite:///nowhere.db", "--help", db=None)
    assert taken.returncode == 0, taken.stderr


async def test_show_gives_a_timers_due_time_as_a_time(sqlite_url: str) -> None:
    """``tether show`` (a pipe's lines and a terminal's) gives a durable timer's recorded
    due time, a ``sleep``'s and a ``cancel``'s that took a timer's place, as a time, as
    it does a ``now``'s. Before, the rows read epoch seconds (``1796549922.757283``)."""
    import io

    from tether.cli._runs import print_timeline
    from tether.cli._show_fit import print_fitted

    app = App(sqlite_url)

    @app.workflow
    async def naps() -> None:
        await tether.sleep(0.01)
        await tether.sleep(3600)

    try:
        async with app.worker(poll_interval=0.05):
            await app.start(naps, run_id="n-1")
            while (await app.get_run("n-1")).status is not tether.RunStatus.WAITING:
                await asyncio.sleep(0.05)
            await app.cancel("n-1")
            with pytest.raises(tether.RunFailed):
                await app.handle("n-1").result(timeout=30)
        info = await app.get_run("n-1")
    finally:
        await app.close()
    due = [e["result"] for e in info.journal]
    assert [e["kind"] for e in info.journal] == ["sleep", "cancel"]
    from tether.cli._common import fmt_time

    wide, fitted = io.StringIO(), io.StringIO()
    print_timeline(info, wide)
    print_fitted(info, 100, fitted.write)
    for text in (wide.getvalue(), fitted.getvalue()):
        assert f"due {fmt_time(due[0])}" in text, text
        assert f"its timer was due {fmt_time(due[1])}" in text, text
        assert str(due[0]) not in text and str(due[1]) not in text, text


async def test_show_says_what_a_waiting_run_asks_a_person_and_how_to_answer(
        sqlite_url: str) -> None:
    """``tether show`` of a run waiting on its LLM budget, or for an approval, printed
    ``waiting for: signal budget`` and a live status cut at 100 characters: the
    budget's figures and the tool call's arguments were cut off, and nothing said which
    command answers. Under *waiting for* it prints what the run asks (the budget's
    message; the approval's tool and arguments) and the command, whole in a pipe and
    wrapped on a terminal. A run waiting for anything else gets no such lines."""
    import io

    from tether.ai import request_approval
    from tether.cli._runs import print_timeline
    from tether.cli._show_fit import print_fitted

    app, thrifty = thrifty_app(sqlite_url)

    @app.workflow(name="refund")
    async def refund(amount: int) -> object:
        decision = await request_approval("pay", {"amount": amount, "to": "ACME Corp"},
                                          "over $100", approval_id="a-7")
        return decision.approved

    @app.workflow(name="plain_wait")
    async def plain_wait() -> object:
        return await tether.wait_for_signal("go")

    async def waiting(run_id: str, on: str) -> tether.RunInfo:
        for _ in range(600):
            info = await app.get_run(run_id)
            if info.waiting_for == on and info.status_info is not None:
                return info
            await asyncio.sleep(0.05)
        raise AssertionError(f"run {run_id} never waited for {on}")

    try:
        async with app.worker(poll_interval=0.05):
            await app.start(thrifty, "q", run_id="th-2")
            await app.start(refund, 500, run_id="rf-2")
            await app.start(plain_wait, run_id="pw-2")
            over = await waiting("th-2", "signal budget")
            asking = await waiting("rf-2", "signal approval")
            for _ in range(600):
                plain = await app.get_run("pw-2")
                if plain.waiting_for == "signal go":
                    break
                await asyncio.sleep(0.05)
    finally:
        await app.close()
    for info, says in (
            (over, ["  asks: The run's LLM budget is reached (0 of 5 tokens spent): give "
                    "new limits (usd and/or tokens) to continue.",
                    "  answer: tether budget th-2 --usd X --tokens N"]),
            (asking, ['  approval a-7: pay {"amount": 500, "to": "ACME Corp"}',
                      "  answer: tether approve rf-2 --approval-id a-7 (--reject to refuse; "
                      "--note TEXT)"])):
        wide = io.StringIO()
        print_timeline(info, wide)
        lines = wide.getvalue().splitlines()
        assert lines[2].startswith(("waiting for: signal budget ",
                                    "waiting for: approval of pay ")), lines
        assert lines[3:5] == says, lines
        fitted = io.StringIO()
        print_fitted(info, 60, fitted.write)
        text = fitted.getvalue()
        assert all(len(line) <= 60 for line in text.splitlines()), text
        assert " ".join(text.split()).count(" ".join(" ".join(says).split())) == 1, text
    wide = io.StringIO()
    print_timeline(plain, wide)
    assert "asks:" not in wide.getvalue() and "answer:" not in wide.getvalue()


def test_versions_help_says_what_it_counts() -> None:
    # ``tether versions --help`` printed its usage and options only: nothing said what
    # a row counts, what ``(none)`` is, or what --json holds.
    shown = tether_cli("versions", "--help", db=None)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "(none) counts the runs started without a version" in text, text
    assert "{version, runs, by_status, live_workers, up_since, newest}" in text, text


async def test_versions_shows_each_versions_live_workers_and_the_newest(
        store_url: str) -> None:
    """In a rolling deploy an operator could not see which versions had workers up,
    nor which one a schedule's ticks go to (the newest live one): ``tether versions``
    showed run counts only, and a new version with no run yet not at all. It now counts
    each version's live workers and marks the newest; once the new version's workers
    stop, the old one is the newest again, and the new one (no run) leaves the list."""
    def code(version: str) -> App:
        app = App(store_url, version=version)

        @app.workflow
        async def job() -> str:
            return version

        return app

    old, new = code("v1"), code("v2")

    async def shown() -> dict[str | None, dict[str, object]]:
        proc = await asyncio.to_thread(tether_cli, "versions", "--json", db=store_url)
        assert proc.returncode == 0, proc.stderr
        return {row["version"]: row for row in json.loads(proc.stdout)}

    async with old, new, old.worker():
        assert await (await old.start("job")).result(timeout=30) == "v1"
        async with new.worker():
            rows = await shown()
            assert rows["v1"]["live_workers"] == 1 and rows["v1"]["runs"] == 1
            assert rows["v2"]["live_workers"] == 1 and rows["v2"]["runs"] == 0
            assert rows["v2"]["newest"] is True and rows["v1"]["newest"] is False
            assert isinstance(rows["v2"]["up_since"], float)
            text = await asyncio.to_thread(tether_cli, "versions", "--wide", db=store_url)
            assert "WORKERS" in text.stdout, text.stdout
            line = next(ln for ln in text.stdout.splitlines() if ln.startswith("v2"))
            assert line.split()[1:3] == ["0", "1"], line
            assert "newest: schedules' ticks run here" in line, line
        rows = await shown()
        assert "v2" not in rows  # (no run, no worker: nothing to show)
        assert rows["v1"]["newest"] is True and rows["v1"]["live_workers"] == 1


async def test_versions_counts_the_live_workers_of_no_version(store_url: str) -> None:
    """``tether versions`` showed WORKERS ``-`` (and ``live_workers`` 0) for
    ``(none)`` however many workers of an app without a version ran: they are counted,
    apart from a versioned one's, and a row of none is listed while they run even
    before any run of none."""
    def code(version: str | None) -> App:
        app = App(store_url, version=version)

        @app.workflow
        async def job() -> str:
            return str(version)

        return app

    plain, versioned = code(None), code("v1")

    async def shown() -> dict[str | None, dict[str, object]]:
        proc = await asyncio.to_thread(tether_cli, "versions", "--json", db=store_url)
        assert proc.returncode == 0, proc.stderr
        return {row["version"]: row for row in json.loads(proc.stdout)}

    async with plain, versioned, versioned.worker(), plain.worker():
        rows = await shown()
        assert rows[None]["live_workers"] == 1 and rows[None]["runs"] == 0
        assert rows["v1"]["live_workers"] == 1
        assert rows[None]["newest"] is False and rows[None]["up_since"] is None
        async with plain.worker():
            # A run of no version is claimed by workers of every version: the v1 worker
            # may be the one that runs it.
            assert await (await plain.start("job")).result(timeout=30) in ("None", "v1")
            rows = await shown()
            assert rows[None]["live_workers"] == 2 and rows[None]["runs"] == 1
            text = await asyncio.to_thread(tether_cli, "versions", db=store_url)
            line = next(ln for ln in text.stdout.splitlines() if ln.startswith("(none)"))
            assert line.split()[1:3] == ["1", "2"], line
    rows = await shown()
    assert rows[None]["live_workers"] == 0 and rows[None]["runs"] == 1


async def test_show_gives_no_attempts_nor_duration_to_a_recorded_value(
        sqlite_url: str) -> None:
    """A journaled ``now`` (and ``random``, ``uuid``: values recorded, not run) read
    ATT 0 and "0 µs" in ``tether show``, as if an attempt were to come and it had been
    timed: now ``-`` in both cells, a pipe's lines and a terminal's, while a step keeps
    its attempts and duration; ``--json`` keeps its fields and values (add-only)."""
    import io

    from tether.cli._runs import print_timeline
    from tether.cli._show_fit import print_fitted

    app = App(sqlite_url)

    @app.step
    async def inc(x: int) -> int:
        return x + 1

    @app.workflow
    async def stamped() -> int:
        tether.now()
        tether.random()
        tether.uuid()
        return await inc(1)

    async with app, app.worker(poll_interval=0.05):
        assert await (await app.start(stamped, run_id="s-1")).result(timeout=30) == 2
        info = await app.get_run("s-1")
    wide, fitted = io.StringIO(), io.StringIO()
    print_timeline(info, wide)
    print_fitted(info, 100, fitted.write)
    for text in (wide.getvalue(), fitted.getvalue()):
        rows = {c[1]: c for c in (line.split() for line in text.splitlines())
                if c and c[0].isdigit()}
        assert set(rows) == {"now", "random", "uuid", "step"}, text
        for kind in ("now", "random", "uuid"):
            assert rows[kind][4:6] == ["-", "-"], text
        # (the step's own duration, whatever the machine's speed: "12 µs", "1.3 ms", "2.1 s")
        assert rows["step"][4] == "1" and rows["step"][6] in ("µs", "ms", "s"), text
        assert not re.search(r"(?<![\d.])0 µs", text), text  # ("10 µs" is a step's)
    shown = await cli("show", "s-1", "--json", db=sqlite_url)
    journal = json.loads(shown.stdout)["journal"]
    assert [(e["kind"], e["attempts"]) for e in journal] == [
        ("now", 0), ("random", 0), ("uuid", 0), ("step", 1)]
    assert [e["duration"] for e in journal[:3]] == [0.0, 0.0, 0.0]


async def test_show_of_a_queued_run_names_its_queues_pause(store_url: str) -> None:
    """A run queued on a paused queue (``tether queue-limit Q 0``) waits for the pause to
    be lifted, not "for a worker": until 2026-12-07 `tether show` said the latter, with
    the queue's workers up, and an operator restarted workers instead of lifting it."""
    from tests.cli.test_fit import on_terminal

    app = make_app(store_url)
    async with app:
        await app.set_queue_limit("default", 0)
        await app.start("doubler", 2, run_id="paused-1")
        async with app.worker(poll_interval=0.1):
            await asyncio.sleep(0.5)  # a worker of the queue is up: it claims nothing
            assert (await app.get_run("paused-1")).status is tether.RunStatus.QUEUED
    piped = (await cli("show", "paused-1", db=store_url)).stdout
    assert ("no operations yet: the run waits in queue default, which is paused (its "
            "limit is 0: `tether queue-resume default` lifts it)") in piped, piped
    fitted = await asyncio.to_thread(on_terminal, "show", "paused-1", db=store_url,
                                     columns=200)
    assert "waits in queue default, which is paused" in fitted, fitted
    async with App(store_url) as admin:
        await admin.set_queue_limit("default", 3)
    piped = (await cli("show", "paused-1", db=store_url)).stdout
    assert ("the run waits in queue default for a worker (at most 3 of its runs at "
            "once: tether queue-limit)") in piped, piped


async def test_queues_shows_each_queues_runs_and_live_workers(
        served: tuple[App, str]) -> None:
    """``tether queues`` gives each queue's queued (and due), running and waiting runs
    and its live workers, in text and ``--json`` (the fields it had kept): until
    2026-12-07 it listed limits and workflows alone, and an operator could not tell a
    backlog or a queue no worker serves from an idle one."""
    app, url = served
    handle = await app.start("approval", run_id="q-wait")
    for _ in range(200):  # (the worker in this process parks it on its signal)
        if (await app.store.run_get("q-wait")).status == "waiting":  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.05)
    await app.start("doubler", 1, run_id="q-side-1", queue="side")
    await app.start("doubler", 2, run_id="q-side-2", queue="side")
    listed = await cli("queues", "--json", db=url)
    assert listed.returncode == 0, listed.stderr
    rows = {r["queue"]: r for r in json.loads(listed.stdout)}
    assert rows["default"] == {"queue": "default", "limit": None, "paused": False,
                               "limit_before_pause": None,
                               "workflows": ["approval", "doubler"], "queued": 0, "due": 0,
                               "running": 0, "waiting": 1, "workers": 1}, rows
    # (a queue no workflow is registered on, only runs: listed, with no worker)
    assert rows["side"] == {"queue": "side", "limit": None, "paused": False,
                            "limit_before_pause": None, "workflows": [], "queued": 2,
                            "due": 2, "running": 0, "waiting": 0, "workers": 0}, rows
    text = (await cli("queues", db=url)).stdout.splitlines()
    assert text[0].split() == ["QUEUE", "LIMIT", "QUEUED", "DUE", "RUNNING", "WAITING",
                               "WORKERS", "WORKFLOWS"], text
    assert ["default", "-", "0", "0", "0", "1", "1", "approval,", "doubler"] in [
        line.split() for line in text], text
    assert ["side", "-", "2", "2", "0", "0", "0", "-"] in [line.split() for line in text]
    await app.signal("q-wait", "approve", True)
    assert await handle.result(timeout=30) is True


@pytest.fixture
async def paused(store_url: str) -> str:
    """A store whose queue ``held`` is paused (``tether queue-limit held 0``), with
    ``doubler`` registered on ``default`` (as a worker of it would have)."""
    async with make_app(store_url) as admin:
        await admin.set_queue_limit("held", 0)
        await admin.store.workflow_register(workflows={"doubler": "default"},
                                            now=admin.clock.now())
    return store_url


async def test_queues_says_a_paused_queue_is_paused(paused: str) -> None:
    """``tether queues``' LIMIT of a paused queue (the pause is the limit 0) is
    ``paused``: it printed 0, which read as a count beside the run figures, or as no
    limit. ``--json`` keeps ``limit: 0`` and adds ``paused``; a limited queue is not."""
    async with make_app(paused) as admin:
        await admin.set_queue_limit("capped", 2)
    text = (await cli("queues", db=paused)).stdout.splitlines()
    text = text[:text.index("")]  # (the table; under it, what a resume gives back)
    rows = {line.split()[0]: line.split() for line in text[1:]}
    assert rows["held"][:2] == ["held", "paused"], text
    assert rows["capped"][:2] == ["capped", "2"], text
    assert rows["default"][:2] == ["default", "-"], text
    column = text[0].index("LIMIT") + len("LIMIT")  # (the figures stay under the title)
    assert {line[:column].rstrip()[-1] for line in text[1:]} == {"d", "2", "-"}, text
    listed = {r["queue"]: r for r in json.loads((await cli("queues", "--json",
                                                           db=paused)).stdout)}
    assert (listed["held"]["limit"], listed["held"]["paused"]) == (0, True), listed
    assert (listed["capped"]["limit"], listed["capped"]["paused"]) == (2, False), listed
    assert (listed["default"]["limit"], listed["default"]["paused"]) == (None, False)


async def test_a_paused_queue_gets_its_limit_back_on_resume(paused: str) -> None:
    """``tether queue-limit Q 5``, a pause (``queue-limit Q 0``, as the docs say, or
    ``queue-pause Q``), then ``queue-resume Q``: the queue has its limit 5 again. Until
    2026-12-07 a pause replaced the limit, and the only way out, ``queue-limit Q none``,
    left the queue with no limit: the operator had to remember the 5. ``tether
    queues`` (and ``--json``'s ``limit_before_pause``) says what a resume gives back;
    ``queue-limit Q none`` still means no limit."""
    assert (await cli("queue-limit", "held", "5", db=paused)).returncode == 0
    paused_by_limit = await cli("queue-limit", "held", "0", db=paused)
    assert paused_by_limit.stdout.strip() == (
        "queue held: paused (at most 0 runs at once); `tether queue-resume held` gives it "
        "back its limit, at most 5 at once"), paused_by_limit.stdout
    text = (await cli("queues", db=paused)).stdout.splitlines()
    assert next(ln for ln in text if ln.startswith("held ")).split()[1] == "paused", text
    assert ("held is paused: `tether queue-resume held` gives it back its limit, at most "
            "5 at once") in text, text
    listed = {r["queue"]: r for r in json.loads((await cli("queues", "--json",
                                                           db=paused)).stdout)}
    assert (listed["held"]["limit"], listed["held"]["paused"],
            listed["held"]["limit_before_pause"]) == (0, True, 5), listed
    assert (listed["default"]["paused"], listed["default"]["limit_before_pause"]) == (
        False, None), listed
    resumed = await cli("queue-resume", "held", db=paused)
    assert (resumed.returncode, resumed.stdout.strip(), resumed.stderr) == (
        0, "queue held: resumed, at most 5 runs at once", ""), resumed
    async with App(paused) as app:
        assert (await app.queue_limits())["held"] == 5
    # queue-pause says it by name; a second resume changes nothing, and says so.
    pause = await cli("queue-pause", "held", db=paused)
    assert pause.stdout.startswith("queue held: paused (its limit is 0)"), pause.stdout
    assert (await cli("queue-resume", "held", db=paused)).returncode == 0
    again = await cli("queue-resume", "held", db=paused)
    assert (again.returncode, again.stdout.strip()) == (
        0, "queue held: not paused, left as it is: at most 5 runs at once"), again
    # (a mistyped queue: nothing to resume, and the closest paused queue named)
    await cli("queue-pause", "held", db=paused)
    typo = await cli("queue-resume", "hled", db=paused)
    assert typo.returncode == 0 and ("tether: warning: the store knows no queue 'hled' "
                                     "(did you mean 'held'?)") in typo.stderr, typo
    typo = await cli("queue-pause", "defualt", db=paused)  # (paused, and warned of)
    assert ("tether: warning: no workflow a worker registered is on queue 'defualt', no "
            "run is queued there and it had no limit: the pause is set, for runs that "
            "come to it (did you mean 'default'?)") in typo.stderr.splitlines(), typo
    # `queue-limit Q none` is no limit, paused or not (the kept 5 is forgotten).
    assert (await cli("queue-limit", "held", "none", db=paused)).returncode == 0
    async with App(paused) as app:
        assert "held" not in await app.queue_limits()
        assert await app.queue_pauses() == {"defualt": None}


async def test_a_limit_on_a_queue_the_store_does_not_know_warns(paused: str) -> None:
    """``tether queue-limit defualt 0`` (a typo, during an incident) paused nothing and
    said only "paused": a queue no registered workflow is on, with no limit and no
    unfinished run, is warned of, with the closest known queue; the limit is still
    set (a queue may be limited before its workers come). A known queue is not."""
    typo = await cli("queue-limit", "defualt", "0", db=paused)
    assert typo.returncode == 0, typo.stderr
    assert typo.stdout.strip() == ("queue defualt: paused (at most 0 runs at once); "
                                   "`tether queue-resume defualt` lifts the pause (it "
                                   "had no limit)")
    assert ("tether: warning: no workflow a worker registered is on queue 'defualt', no "
            "run is queued there and it had no limit: the limit is set, for runs that "
            "come to it (did you mean 'default'?)") in typo.stderr.splitlines(), typo.stderr
    async with make_app(paused) as admin:
        assert (await admin.queue_limits())["defualt"] == 0
        await admin.start("doubler", 1, run_id="q-1", queue="side")
    for queue in ("default", "held", "defualt", "side"):
        known = await cli("queue-limit", queue, "3", db=paused)
        assert known.returncode == 0 and known.stderr == "", (queue, known.stderr)


async def test_no_limit_on_a_queue_the_store_does_not_know_says_nothing_was_set(
        paused: str) -> None:
    """``tether queue-limit defualt none`` removes nothing from a queue the store does
    not know, and says so, with the closest known queue (until 2026-12-07 its warning
    said "the limit is set"); ``tether queues`` lists no such queue either. A known
    queue's ``none`` is not warned of."""
    typo = await cli("queue-limit", "defualt", "none", db=paused)
    assert (typo.returncode, typo.stdout.strip()) == (0, "queue defualt: no limit"), typo
    assert typo.stderr.splitlines() == [
        "tether: warning: the store knows no queue 'defualt' (no workflow a worker "
        "registered is on it, no run is queued there and it had no limit): it has no "
        "limit, as before (did you mean 'default'?)"], typo.stderr
    assert "defualt" not in (await cli("queues", db=paused)).stdout
    known = await cli("queue-limit", "default", "none", db=paused)
    assert (known.returncode, known.stderr) == (0, ""), known.stderr


async def test_a_start_on_a_paused_queue_warns(paused: str) -> None:
    """``tether start`` on a paused queue (``tether queue-limit Q 0``) warns that the run
    waits for the pause to be lifted (and ``--json`` lists it in ``warnings``), as it
    warns of a workflow no worker registered. Until 2026-12-07 it said nothing."""
    start = await cli("start", "doubler", "--id", "p-1", "--queue", "held", "--input",
                      "[1]", db=paused)
    assert start.returncode == 0, start.stderr
    assert ("tether: warning: queue 'held' is paused (limit 0): the run waits until "
            "`tether queue-resume held` lifts it") in start.stderr.splitlines(), \
        start.stderr
    other = await cli("start", "doubler", "--id", "p-2", "--input", "[1]", db=paused)
    assert other.returncode == 0 and "paused" not in other.stderr, other.stderr
    as_json = await cli("start", "doubler", "--id", "p-3", "--queue", "held", "--json",
                        db=paused)
    assert any("is paused" in w for w in json.loads(as_json.stdout)["warnings"]), \
        as_json.stdout


async def test_runs_says_a_queued_run_waits_for_its_queues_pause(paused: str) -> None:
    """``tether runs``' WAITING FOR of a run queued on a paused queue says "queue paused"
    (it was empty, as for a run about to be claimed), on a pipe and on a terminal."""
    from tests.cli.test_fit import on_terminal

    async with App(paused) as app:
        await app.start("doubler", 1, run_id="p-1", queue="held")
        await app.start("doubler", 2, run_id="p-2")
    rows = {line.split()[0]: line for line in
            (await cli("runs", db=paused)).stdout.splitlines()[1:]}
    assert rows["p-1"].split()[2:4] == ["held", "queued"], rows
    assert rows["p-1"].endswith(" queue paused"), rows
    assert "paused" not in rows["p-2"], rows
    fitted = await asyncio.to_thread(on_terminal, "runs", db=paused, columns=120)
    assert next(ln for ln in fitted.splitlines() if ln.startswith("p-1 ")).endswith(
        " queue paused"), fitted


async def test_the_run_page_says_a_queued_runs_queue_is_paused(paused: str) -> None:
    """The run page of a run queued on a paused queue says the queue is paused (it said
    the run "waits in queue held for a worker"), as ``tether show`` does."""
    import httpx

    from tether.serve import create_app

    async with App(paused) as app:
        await app.start("doubler", 1, run_id="p-1", queue="held")
        await app.start("doubler", 2, run_id="p-2")
        asgi = create_app(app, mcp=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1") as http:
            page = " ".join((await http.get("/runs/p-1")).text.split())
            plain = " ".join((await http.get("/runs/p-2")).text.split())
    assert ("No operations yet: the run waits in queue <b>held</b>, which is paused (its "
            "limit is 0: <code>tether queue-resume held</code> lifts it).") in page
    assert "for a worker" not in page
    assert "the run waits in queue <b>default</b> for a worker." in plain


async def test_a_short_commands_warnings_read_as_its_errors_do(store_url: str) -> None:
    """A short-lived command's warnings are ``tether: warning: ...`` lines on stderr, as
    its error is ``tether: error: ...``: no time, no level and logger of a log line
    (until 2026-12-07 ``2026-12-07 00:44:01,123 WARNING tether.cli: ...``). So are the
    warnings the library logs under it (``App.start``'s workflow that no worker
    registered, logged by ``tether``). A worker keeps its log lines (time, level,
    logger), and ``--log-level info`` lines keep them too."""
    start = await cli("start", "nobody-serves", "--id", "w-1", db=store_url)
    assert start.returncode == 0, start.stderr
    # (The start's warning names its run, as the worker's lines about a run do: it had
    # no run id until 2026-12-07, in the text or in a JSON log line's fields.)
    assert start.stderr.splitlines() == [
        "tether: warning: run w-1: no worker has registered workflow 'nobody-serves' in "
        "this store yet; the run waits on queue 'default' until a worker with that "
        "workflow serves it"], start.stderr
    again = await cli("start", "nobody-serves", "--id", "w-1", db=store_url)
    assert again.stderr.splitlines() == [
        "tether: warning: run 'w-1' already existed and was not started again; its input "
        "is the same"], again.stderr
    runs = await cli("runs", "--workflow", "nobody-serve", db=store_url)
    assert runs.stderr.splitlines() == [
        "tether: warning: no worker has registered workflow 'nobody-serve' in this "
        "store"], runs.stderr
    # ``--log-level info``: an info line keeps the log format, a warning does not.
    info = await cli("start", "nobody-serves", "--id", "w-2", "--log-level", "debug",
                     db=store_url)
    warned = [ln for ln in info.stderr.splitlines() if "no worker has registered" in ln]
    assert warned and all(ln.startswith("tether: warning: ") for ln in warned), info.stderr
    # A long-running command keeps the log format: a worker's lines start with the time.
    env = dict(os.environ)
    env.pop("TETHER_DATABASE_URL", None)
    worker = subprocess.Popen(
        [sys.executable, "-m", "tether", "worker", "tests.cli.cli_app:app", "--db",
         store_url], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert worker.stderr is not None
        first = await asyncio.to_thread(worker.stderr.readline)
    finally:
        worker.terminate()
        worker.communicate(timeout=60)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO tether\.worker: worker ",
                    first), first


async def test_a_recreated_schedule_shows_its_names_last_run(store_url: str) -> None:
    """A schedule deleted (``tether schedules delete``) and created again by a worker
    whose code declares it has a new row, with no last run: ``tether schedules``, its
    ``--json`` and ``GET /api/v1/schedules`` said ``-`` / null beside the runs it had
    started. They give the newest run a schedule of that name started (not another
    schedule's whose name ends in it), until its next tick sets its own."""
    import httpx

    from tether._lifecycle import make_spec, to_record
    from tether.serve import create_app

    async with make_app(store_url) as app:
        now = app.clock.now()
        for name in ("nightly", "eu-nightly"):
            spec = make_spec("doubler", "default", "0 3 * * *", name=name, args=(1,))
            await app.store.schedule_upsert(schedule=to_record(app, spec, now))
    triggered = (await cli("schedules", "trigger", "nightly", db=store_url)).stdout.strip()
    assert triggered.startswith("nightly@manual-"), triggered
    assert (await cli("schedules", "delete", "nightly", db=store_url)).returncode == 0
    other = (await cli("schedules", "trigger", "eu-nightly", db=store_url)).stdout.strip()
    async with make_app(store_url) as app:  # (a worker starting: the schedule again)
        spec = make_spec("doubler", "default", "0 3 * * *", name="nightly", args=(1,))
        await app.store.schedule_upsert(schedule=to_record(app, spec, app.clock.now()))
        asgi = create_app(app, mcp=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1") as http:
            api = {s["name"]: s for s in
                   (await http.get("/api/v1/schedules")).json()["schedules"]}
            page = (await http.get("/schedules")).text
    listed = {s["name"]: s for s in json.loads(
        (await cli("schedules", "--json", db=store_url)).stdout)}
    assert listed["nightly"]["last_run_id"] == api["nightly"]["last_run_id"] == triggered
    assert listed["eu-nightly"]["last_run_id"] == api["eu-nightly"]["last_run_id"] == other
    rows = {line.split()[0]: line for line in
            (await cli("schedules", db=store_url)).stdout.splitlines()[1:]}
    assert rows["nightly"].endswith(f" {triggered}"), rows
    assert f'title="{triggered}">{triggered}</a>' in page, page


async def test_show_says_a_run_of_no_version_is_claimed_by_every_version(
        store_url: str) -> None:
    """With versioned workers live, a run started without a version (``tether start``
    without ``--app``, the HTTP API without ``serve --app``) is claimed by a worker of
    any version, and ``tether show`` printed no version line for it, as in a store of no
    versions. It says it has none, that every version claims it, and which are live
    (the claim records no version: which one ran it is not known); a pinned run's line
    is as it was; with no versioned worker live, no line."""
    from tests.cli.test_fit import on_terminal

    pinned = App(store_url, version="v1")

    @pinned.workflow(name="approval")
    async def approval() -> object:
        return await tether.wait_for_signal("approve")

    async with pinned, pinned.worker(poll_interval=0.05):
        async with App(store_url) as plain:  # (as `tether start approval`)
            await plain.start("approval", run_id="of-none")
        await pinned.start("approval", run_id="of-v1")
        for _ in range(600):  # (the v1 worker claims both: each waits for its signal)
            if {(await pinned.get_run(r)).status.value for r in ("of-none", "of-v1")} == {
                    "waiting"}:
                break
            await asyncio.sleep(0.05)
        none = (await cli("show", "of-none", db=store_url)).stdout
        v1 = (await cli("show", "of-v1", db=store_url)).stdout
        fitted = await asyncio.to_thread(on_terminal, "show", "of-none", db=store_url,
                                         columns=50)
    note = ("version: none (a run of none is claimed by workers of every version; live "
            "now: v1)")
    assert note in none.splitlines(), none
    assert "version: v1" in v1.splitlines() and "none" not in v1, v1
    assert " ".join(fitted.split()).count(" ".join(note.split())) == 1, fitted
    assert all(len(line) <= 50 for line in fitted.splitlines()), fitted
    after = (await cli("show", "of-none", db=store_url)).stdout  # (no worker live now)
    assert "version" not in after, after
