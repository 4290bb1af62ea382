"""The replayer checks recorded runs against changed code without executing anything:
a patch keeps old runs compatible; an added, removed or renamed operation is reported
at its position with both sides; runs in flight may grow, ended runs may not. Also
``tether export`` / ``tether replay --check`` end to end, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import forked
from tether.errors import ConfigError
from tether.testing import HistoryError, TestEnv, export_history, load_history, replay
from tether.testing._history import VERSION

from . import replay_apps as apps

ROOT = Path(__file__).resolve().parents[2]


async def record(tmp_path: Path) -> dict[str, Path]:
    """Two runs of v1 in a real store: one completed, one waiting for its signal."""
    env = TestEnv(apps.v1, start_time=0.0)
    async with env:
        done = await env.start("flow", "abc", run_id="done")
        await env.app.signal("done", "go", 7)
        assert await done.result() == 4
        await env.start("flow", "xyz", run_id="waiting")
        await env.advance(3600)
        paths = {}
        for run_id in ("done", "waiting"):
            path = tmp_path / f"{run_id}.json"
            path.write_text(json.dumps(await export_history(env.app, run_id)))
            paths[run_id] = path
        # The CLI reads the same store (copied with its WAL: the environment deletes
        # its own when it closes).
        db = Path(env.store_url[len("sqlite:///"):])
        for suffix in ("", "-wal"):
            source = db.with_name(db.name + suffix)
            if source.exists():
                (tmp_path / f"store.db{suffix}").write_bytes(source.read_bytes())
    return paths


@pytest.fixture
async def recorded(tmp_path: Path) -> dict[str, Path]:
    paths = await record(tmp_path)
    apps.CALLS.clear()
    return paths


async def test_exported_history_has_the_documented_shape(recorded: dict[str, Path]) -> None:
    data = json.loads(recorded["done"].read_text())
    assert data["format"] == "tether.history" and data["version"] == VERSION
    assert (data["run_id"], data["workflow"], data["status"]) == ("done", "flow", "completed")
    assert data["input"] == {"args": ["abc"]} and data["result"] == 4
    assert [(e["position"], e["kind"], e["name"], e["status"]) for e in data["journal"]] == [
        (0, "step", "fetch", "ok"), (1, "sleep", "sleep", "ok"), (2, "signal", "go", "ok"),
        (3, "step", "store", "ok")]
    assert data["journal"][0]["args"] == ["abc"] and data["journal"][0]["result"] == "ABC"
    assert data["journal"][2]["result"] == 7


async def test_same_code_and_patched_code_replay_without_executing(
        recorded: dict[str, Path]) -> None:
    for app in (apps.v1, apps.v2):
        done, waiting = await replay(app, [recorded["done"], recorded["waiting"]])
        assert done.compatible and waiting.compatible, (done.message, waiting.message)
        assert done.replayed == 4 and waiting.replayed == 2
        assert "signal 'go' at position 2" in waiting.message
    assert apps.CALLS == []
    assert not os.path.exists("replay-apps-never-opened.db")


async def test_an_operation_inserted_without_a_patch_is_reported_at_its_position(
        recorded: dict[str, Path]) -> None:
    done, waiting = await replay(apps.v3, [recorded["done"], recorded["waiting"]])
    for r in (done, waiting):
        assert not r.compatible
        assert (r.position, r.recorded, r.requested) == (1, ("sleep", "sleep"),
                                                         ("step", "audit"))
        assert r.message == ("position 1: recorded sleep 'sleep', the code asks for step "
                             "'audit' (the journal has no step 'audit' anywhere: a new or "
                             "renamed operation? tether.patched() keeps the runs in flight "
                             "on the old path)")
    assert apps.CALLS == []


async def test_an_operation_removed_before_others_is_located_in_the_journal(
        recorded: dict[str, Path]) -> None:
    """The code dropped the sleep: at position 1 it asks for the signal the journal holds
    at position 2, and the message says where (the bare mismatch named both sides but
    left the user to find out whether something was added or removed)."""
    [done] = await replay(apps.v7, recorded["done"])
    assert (done.position, done.recorded, done.requested) == (1, ("sleep", "sleep"),
                                                              ("signal", "go"))
    assert done.message == ("position 1: recorded sleep 'sleep', the code asks for signal "
                            "'go' (the journal has signal 'go' at position 2: 1 operation "
                            "removed or moved before it?)")
    assert done.changed_args == ()  # arguments are not compared unless asked


async def test_changed_arguments_are_compared_only_when_asked(
        recorded: dict[str, Path]) -> None:
    """The same operations with other arguments replay (a worker answers them from the
    journal whatever their arguments, as Temporal's replayer does); compare_args=True
    reports every change, in order, and the run is then not compatible."""
    [plain] = await replay(apps.v6, recorded["done"])
    assert plain.compatible and plain.changed_args == ()
    [done] = await replay(apps.v6, recorded["done"], compare_args=True)
    assert not done.compatible
    assert [(c.position, c.kind, c.name, c.recorded, c.requested)
            for c in done.changed_args] == [(0, "step", "fetch", ["abc"], ["abc!"]),
                                            (3, "step", "store", ["ABC7"], ["ABC8"])]
    assert (done.position, done.recorded, done.requested) == (0, ("step", "fetch"),
                                                              ("step", "fetch"))
    assert done.message == ('position 0: step \'fetch\' recorded with arguments ["abc"], '
                            'the code passes ["abc!"] (and 1 more argument change, at '
                            'position 3)')
    assert done.to_dict()["changed_args"][1] == {
        "position": 3, "kind": "step", "name": "store", "recorded": ["ABC7"],
        "requested": ["ABC8"], "prompt": None, "tools": None}
    # Unchanged code has nothing to report; a run in flight only what it recorded.
    [same] = await replay(apps.v1, recorded["done"], compare_args=True)
    assert same.compatible and same.changed_args == ()
    [waiting] = await replay(apps.v6, recorded["waiting"], compare_args=True)
    assert not waiting.compatible and [c.position for c in waiting.changed_args] == [0]
    assert apps.CALLS == []


async def test_argument_changes_before_a_mismatch_are_listed_with_it(
        recorded: dict[str, Path]) -> None:
    [done] = await replay(apps.v7, recorded["done"], compare_args=True)
    assert (done.position, done.recorded, done.requested) == (1, ("sleep", "sleep"),
                                                              ("signal", "go"))
    assert [c.position for c in done.changed_args] == [0]
    assert done.message.endswith("; before it, arguments changed at position 0")


async def test_a_removed_operation_is_a_recorded_entry_nobody_asks_for(
        recorded: dict[str, Path]) -> None:
    [done] = await replay(apps.v4, recorded["done"])
    assert not done.compatible
    assert (done.position, done.recorded, done.requested) == (3, ("step", "store"), None)
    # The run in flight never recorded that step: it is still compatible.
    [waiting] = await replay(apps.v4, recorded["waiting"])
    assert waiting.compatible


async def test_ended_runs_cannot_grow_runs_in_flight_can(recorded: dict[str, Path]) -> None:
    done, waiting = await replay(apps.v5, [recorded["done"], recorded["waiting"]])
    assert not done.compatible
    assert (done.position, done.recorded, done.requested) == (4, None, ("step", "audit"))
    assert waiting.compatible
    assert apps.CALLS == []


async def test_replay_takes_dicts_and_reports_an_unknown_workflow(
        recorded: dict[str, Path]) -> None:
    data = json.loads(recorded["done"].read_text())
    [ok] = await replay(apps.v1, data)
    assert ok.compatible
    [unknown] = await replay(apps.v1, {**data, "workflow": "gone"})
    assert not unknown.compatible and "workflow 'gone' is not registered" in unknown.message


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "30"])
async def test_a_timeout_that_is_no_positive_finite_number_is_refused(
        recorded: dict[str, Path], timeout: Any) -> None:
    """Until 2026-12-06 ``replay(..., timeout=0)`` (or -1, or NaN) reported every run
    incompatible, "did not reach the end of its journal within 0 s": a wrong argument
    read as a breaking change in the code."""
    with pytest.raises(ConfigError, match="timeout must be a finite number"):
        await replay(apps.v1, recorded["done"], timeout=timeout)
    with pytest.raises(ConfigError, match=r"replay checks a tether\.App"):
        await replay("tests.testing.replay_apps:v1", recorded["done"])  # type: ignore[arg-type]
    [ok] = await replay(apps.v1, recorded["done"], timeout=30)
    assert ok.compatible


async def test_code_that_waits_on_something_else_times_out(recorded: dict[str, Path]) -> None:
    [r] = await replay(apps.hangs, recorded["done"], timeout=0.2)
    assert not r.compatible and "did not reach the end of its journal" in r.message


@pytest.mark.parametrize(("content", "error"), [
    ("{not json", "not JSON"),
    ('{"a": 1}', "not a Tether history"),
    (json.dumps({"format": "tether.history", "version": VERSION + 1}), "is newer than"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "completed"}), "\"journal\" must be a list"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "completed",
                 "journal": [{"position": "0", "kind": "step", "name": "x",
                              "status": "ok"}]}), "journal[0].position must be an integer"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "completed",
                 "journal": [{"position": 0, "kind": "teleport", "name": "x",
                              "status": "ok"}]}), "journal[0].kind 'teleport' is not one of"),
    # Until 2026-12-06 these loaded, and were checked as if they were runs: a bogus
    # status or a string input passed as compatible, duplicate positions or a string
    # error came out as a mismatch, a string `attempts` as "bad payload" (exit 1).
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "finished", "journal": []}),
     "\"status\" 'finished' is not one of queued"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "completed", "input": "abc",
                 "journal": []}), "\"input\" must be an object"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "completed", "input": {"args": "abc"},
                 "journal": []}), "\"input\".args must be a list"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "completed",
                 "input": {"args": [], "kwargs": []}, "journal": []}),
     "\"input\".kwargs must be an object"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "completed", "error": "boom",
                 "journal": []}), "\"error\" must be an object or null"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "completed",
                 "journal": [{"position": 0, "kind": "now", "name": "now", "status": "ok"},
                             {"position": 0, "kind": "now", "name": "now", "status": "ok"}]}),
     "journal[1].position 0 is out of order"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "completed",
                 "journal": [{"position": -1, "kind": "now", "name": "now",
                              "status": "ok"}]}), "journal[0].position -1 is out of order"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "completed",
                 "journal": [{"position": 0, "kind": "step", "name": "x", "status": "ok",
                              "attempts": "x"}]}),
     "journal[0].attempts must be an integer or null"),
    (json.dumps({"format": "tether.history", "version": 1, "run_id": "r",
                 "workflow": "flow", "status": "failed",
                 "journal": [{"position": 0, "kind": "step", "name": "x",
                              "status": "error", "error": "boom"}]}),
     "journal[0].error must be an object or null"),
])
def test_bad_history_files_get_a_one_line_error(tmp_path: Path, content: str,
                                                error: str) -> None:
    path = tmp_path / "h.json"
    path.write_text(content)
    with pytest.raises(HistoryError, match=error.replace("[", r"\[").replace("]", r"\]")):
        load_history(path)
    with pytest.raises(HistoryError, match="cannot read it"):
        load_history(tmp_path / "missing.json")


def tether(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TETHER_DATABASE_URL", None)
    return forked.run([sys.executable, "-m", "tether", *args], cwd=cwd, env=env,
                      capture_output=True, text=True, timeout=60)


@pytest.mark.slow
async def test_cli_export_then_replay_check(recorded: dict[str, Path], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/store.db"
    out = tether("export", "done", "--db", db)
    assert out.returncode == 0, out.stderr
    exported = tmp_path / "cli-done.json"
    exported.write_text(out.stdout)
    assert json.loads(out.stdout) == json.loads(recorded["done"].read_text())

    ok = tether("replay", "--check", "tests.testing.replay_apps:v2", str(exported),
                str(recorded["waiting"]))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("ok ") == 2

    bad = tether("replay", "--check", "tests.testing.replay_apps:v3", str(exported), "--json")
    assert bad.returncode == 1
    [result] = json.loads(bad.stdout)
    assert result["position"] == 1 and result["recorded"] == ["sleep", "sleep"]
    assert result["requested"] == ["step", "audit"] and result["compatible"] is False

    args_plain = tether("replay", "--check", "tests.testing.replay_apps:v6", str(exported))
    assert args_plain.returncode == 0, args_plain.stdout + args_plain.stderr
    args = tether("replay", "--check", "tests.testing.replay_apps:v6", str(exported),
                  "--compare-args", "--json")
    assert args.returncode == 1, args.stdout + args.stderr
    [result] = json.loads(args.stdout)
    assert [c["position"] for c in result["changed_args"]] == [0, 3]

    from_db = tether("replay", "--check", "tests.testing.replay_apps:v5", "--db", db,
                     "--workflow", "flow")
    assert from_db.returncode == 1
    lines = from_db.stdout.splitlines()
    assert any(line.startswith("MISMATCH done flow") for line in lines)
    assert any(line.startswith("ok       waiting flow") for line in lines)


def test_cli_replay_limit_is_bounded(recorded: dict[str, Path], tmp_path: Path) -> None:
    """Until 2026-12-06 a --limit past SQLite's 64-bit integers was taken, and the read
    of the workflow's runs failed with a traceback (OverflowError, exit 1)."""
    db = f"sqlite:///{tmp_path}/store.db"
    ok = tether("replay", "--check", "tests.testing.replay_apps:v2", "--db", db,
                "--workflow", "flow", "--limit", "1000000")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    huge = tether("replay", "--check", "tests.testing.replay_apps:v2", "--db", db,
                  "--workflow", "flow", "--limit", "99999999999999999999")
    assert huge.returncode == 2, huge.stderr
    assert "--limit: must be at most 1,000,000" in huge.stderr
    assert "Traceback" not in huge.stderr


@pytest.mark.slow
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "g.json"
    garbage.write_text("[1, 2")
    cases: list[tuple[list[str], str]] = [
        (["replay", "--check", "tests.testing.replay_apps:v1", str(garbage)], "not JSON"),
        (["replay", "--check", "tests.testing.replay_apps:v1"], "nothing to check"),
        (["replay", "--check", "tests.testing.replay_apps:v1", "--workflow", "nope",
          "--db", f"sqlite:///{tmp_path}/x.db"],
         "tests.testing.replay_apps:v1 has no workflow 'nope' (its workflows: "),
        (["replay", "--check", "no_such_module:app", str(garbage)], "cannot import"),
    ]
    for argv, message in cases:
        out = tether(*argv)
        assert out.returncode in (1, 2), argv
        err: Any = out.stderr.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, out.stderr)
    # A mistyped field is bad input (2), not a run that does not replay (1): until
    # 2026-12-06 a string `attempts` exited 1 with "bad payload in the journal".
    mistyped = tmp_path / "m.json"
    mistyped.write_text(json.dumps({
        "format": "tether.history", "version": 1, "run_id": "r", "workflow": "flow",
        "status": "completed", "input": {"args": ["abc"]},
        "journal": [{"position": 0, "kind": "step", "name": "fetch", "status": "ok",
                     "attempts": "x", "result": "ABC"}]}))
    out = tether("replay", "--check", "tests.testing.replay_apps:v1", str(mistyped))
    assert out.returncode == 2 and out.stdout == "", (out.stdout, out.stderr)
    assert "journal[0].attempts must be an integer" in out.stderr.strip().splitlines()[0]
    missing = tether("export", "nope", "--db", f"sqlite:///{tmp_path}/none.db")
    assert missing.returncode == 1 and "no Tether store" in missing.stderr


class Rot13:
    """A payload hook (stand-in for encryption): stored text is unreadable as JSON."""

    def encode(self, text: str) -> str:
        import codecs

        return "rot13:" + codecs.encode(text, "rot13")

    def decode(self, text: str) -> str:
        import codecs

        assert text.startswith("rot13:"), text
        return codecs.decode(text[len("rot13:"):], "rot13")


async def test_histories_hold_json_values_whatever_the_payload_hook() -> None:
    import tether

    app = tether.App(payload_hook=Rot13())

    @app.step
    def greet(name: str) -> dict[str, str]:
        return {"hello": name}

    @app.workflow
    async def wf(name: str) -> str:
        reply = await greet(name)
        await tether.sleep(60)
        return reply["hello"]

    async with TestEnv(app) as env:
        handle = await env.start(wf, "ada")
        assert await handle.result() == "ada"
        stored = await env.app.store.journal_read(handle.run_id)
        history = await export_history(env.app, handle.run_id)
    assert stored[0].result is not None and stored[0].result.startswith("rot13:")
    assert history["journal"][0]["result"] == {"hello": "ada"}
    assert history["input"] == {"args": ["ada"]}
    [result] = await replay(app, history)
    assert result.compatible, result.message


async def test_code_that_raises_non_determinism_itself_is_incompatible(
        recorded: dict[str, Path]) -> None:
    """A workflow (an integration) that raises NonDeterminismError after replaying its
    whole journal is reported incompatible with its message (a worker blocks it), not
    "compatible, the code raises"."""
    [done] = await replay(apps.says, recorded["done"])
    assert not done.compatible
    assert done.message == "non-determinism in run 'done': store's recorded 4 no longer fits"
    assert done.recorded == ("step", "store")


async def test_a_child_starts_arguments_are_compared_through_the_payload_hook() -> None:
    """A child started with another input (under a payload hook, so every payload is
    bound to its run and unreadable as JSON) is an argument change, keyed by what the
    parent's journal keeps: the child's {"args": [...]}."""
    import tether

    def make(upper: bool) -> tether.App:
        app = tether.App(payload_hook=Rot13())

        @app.workflow(name="child")
        async def child(name: str) -> str:
            return name

        @app.workflow(name="parent")
        async def parent(name: str) -> str:
            handle = await tether.start_child(child, name.upper() if upper else name)
            return await handle.result()

        return app

    v1, v2 = make(False), make(True)
    async with TestEnv(v1) as env:
        handle = await env.start("parent", "ada", run_id="p")
        assert await handle.result() == "ada"
        history = await export_history(env.app, "p")
    [same] = await replay(v1, history, compare_args=True)
    assert same.compatible and same.changed_args == (), same.message
    [plain] = await replay(v2, history)
    assert plain.compatible
    [changed] = await replay(v2, history, compare_args=True)
    assert not changed.compatible
    [change] = changed.changed_args
    assert (change.position, change.kind, change.name) == (0, "child_start", "child")
    assert (change.recorded, change.requested) == ({"args": ["ada"]}, {"args": ["ADA"]})
    assert changed.message == ("position 0: child_start 'child' arguments changed (args: "
                               '["ada"] -> ["ADA"])')


def test_cli_replay_of_a_workflow_reads_its_runs_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``replay --workflow`` asks the store for the workflow's newest ``--limit`` runs
    (``run_search``'s workflow filter, an index) instead of reading every run
    (``run_list(limit=1_000_000)``: up to a million runs read and decoded to keep a
    workflow's few) and filtering them in Python. Runs of another workflow, newer, are
    neither read nor checked."""
    import asyncio

    from tether._types import RunRecord
    from tether.cli import main
    from tether.store import open_store

    asyncio.run(record(tmp_path))
    db = f"sqlite:///{tmp_path}/store.db"

    async def others() -> None:
        store = open_store(db)
        await store.open()
        try:
            for i in range(30):
                await store.run_insert(run=RunRecord(
                    run_id=f"other-{i}", workflow="other", queue="default",
                    status="completed", input="[[], {}]", created_at=1e6 + i,
                    updated_at=1e6 + i))
        finally:
            await store.close()

    asyncio.run(others())

    def every_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("replay --workflow read every run")

    monkeypatch.setattr(type(open_store(db)), "run_list", every_run)
    assert main(["replay", "--check", "tests.testing.replay_apps:v1", "--db", db,
                 "--workflow", "flow", "--json"]) == 0
    assert sorted(r["run_id"] for r in json.loads(capsys.readouterr().out)) == [
        "done", "waiting"]
    assert main(["replay", "--check", "tests.testing.replay_apps:v1", "--db", db,
                 "--workflow", "flow", "--limit", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


async def test_live_events_from_workflow_code_do_not_stop_the_check() -> None:
    """``ext.Run.publish`` in workflow code sends observers an event, never journaled:
    the check drops it, as it drops live status. It was refused as a use of the store,
    so the run was reported incompatible ("the run ended with nothing recorded there"
    at a position its journal records). A read of the store outside an operation
    cannot be answered: said so, not as a missing entry."""
    from tether import App, ext

    app = App()

    @app.step
    def fetch(key: str) -> str:
        return key.upper()

    @app.workflow
    async def announced(key: str) -> str:
        value = await fetch(key)
        run = ext.current_run()
        assert run is not None
        await run.publish({"type": "acme.fetched", "value": value})
        return value

    @app.workflow
    async def peeking(key: str) -> str:
        value = await fetch(key)
        run = ext.current_run()
        assert run is not None
        await run.shared.kv_get(key="acme.seen")  # (not journaled: a step's job)
        return value

    async with TestEnv(app) as env:
        histories = []
        for workflow in (announced, peeking):
            handle = await env.start(workflow, "abc")
            assert await handle.result() == "ABC"
            histories.append(await export_history(env.app, handle.run_id))
    published, peeked = await replay(app, histories)
    assert published.compatible, published.message
    assert not peeked.compatible
    assert peeked.message == ("after 1 operation: the code uses the store outside an "
                              "operation (kv_get), which the journal does not record, so a "
                              "replay cannot answer it: read it in a step")


async def _history_of(app: Any, run_id: str) -> dict[str, Any]:
    env = TestEnv(app, start_time=0.0)
    async with env:
        handle = await env.start("flow", "abc", run_id=run_id)
        await env.advance(3600)
        await env.app.signal(run_id, "go", 7)
        assert await handle.result() == 4
        return await export_history(env.app, run_id)


async def test_a_deprecated_patch_replays_runs_with_and_without_its_marker() -> None:
    """``deprecate_patch`` (v2d) replays a run that recorded v2's marker; a run it
    records holds no marker, so the code without the call (v3) replays it, while a run
    with the marker does not replay under v3."""
    marked = await _history_of(apps.v2, "marked")
    fresh = await _history_of(apps.v2d, "fresh")
    assert [e["kind"] for e in marked["journal"]][:2] == ["step", "patch"]
    assert [e["kind"] for e in fresh["journal"]][:2] == ["step", "step"]
    apps.CALLS.clear()
    with_marker, without = await replay(apps.v2d, [marked, fresh])
    assert with_marker.compatible and with_marker.replayed == 6, with_marker.message
    assert without.compatible and without.replayed == 5, without.message
    assert apps.CALLS == []  # nothing executed
    gone_marked, gone_fresh = await replay(apps.v3, [marked, fresh])
    assert gone_fresh.compatible, gone_fresh.message
    assert not gone_marked.compatible and gone_marked.recorded == ("patch", "audit-before-sleep")


def test_cli_unfinished_filters_history_files_by_their_status(
        recorded: dict[str, Path]) -> None:
    """With history files, --unfinished and --status keep the files whose recorded
    status they name: v5 (a step appended) does not replay the completed run, and the
    check of the waiting one alone passes."""
    files = [str(recorded["done"]), str(recorded["waiting"])]
    every = tether("replay", "--check", "tests.testing.replay_apps:v5", *files, "--json")
    assert every.returncode == 1, every.stderr
    assert {r["run_id"]: r["compatible"] for r in json.loads(every.stdout)} == {
        "done": False, "waiting": True}
    unfinished = tether("replay", "--check", "tests.testing.replay_apps:v5", *files,
                        "--unfinished", "--json")
    assert unfinished.returncode == 0, unfinished.stdout + unfinished.stderr
    assert [r["run_id"] for r in json.loads(unfinished.stdout)] == ["waiting"]
    ended = tether("replay", "--check", "tests.testing.replay_apps:v5", *files,
                   "--status", "completed,failed")
    assert ended.returncode == 1 and "MISMATCH done flow" in ended.stdout
