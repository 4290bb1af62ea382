"""``MODULE:APP`` that names no App: every command that takes one answers each way it
can fail with the same one-line error and exit 2 (bad input), as ``tether --help`` says.

Before, a module that could not be imported, a missing attribute, an attribute that is
not an App and a module with several Apps exited 1, a module whose import raised was a
traceback, and only an empty module name exited 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import forked
from tests.cli.test_cli import assert_one_line_error
from tether import App

MODULES = {
    "spec_ok.py": "from tether import App\napp = App()\nnot_an_app = 3\n",
    "spec_two.py": "from tether import App\nfirst = App()\nsecond = App()\n",
    "spec_none.py": "from tether import App\n\ndef make() -> App:\n    return App()\n",
    "spec_alias.py": "from tether import App\napp = App()\napplication = app\n",
    "spec_raises.py": "from tether import App\napp = App()\n\n"
                      "raise RuntimeError('boom while importing')\n",
    "spec_syntax.py": "from tether import App\napp = App(\n",
}

#: (MODULE:APP, what the error line says)
CASES = [
    ("spec_missing:app", "cannot import 'spec_missing': No module named 'spec_missing'"),
    ("spec_ok:nope", "'spec_ok' has no attribute 'nope' (its App objects: app)"),
    ("spec_ok:not_an_app", "'spec_ok:not_an_app' is of type int, not a tether.App"),
    # MODULE alone takes the one App a module holds: none said "has 0 App objects: name
    # one (MODULE:APP)", and several were not named.
    ("spec_two", "'spec_two' has 2 App objects (first, second): name one (MODULE:APP), as "
                 "spec_two:first"),
    ("spec_none", "'spec_none' has no App object at module level (MODULE alone takes the "
                  "one tether.App a module holds, MODULE:APP names one there)"),
    ("spec_raises:app", "cannot import 'spec_raises': its import raised RuntimeError: "
                        "boom while importing ("),
    ("spec_syntax:app", "cannot import 'spec_syntax': its import raised SyntaxError: "),
    (":app", "expected MODULE:APP, got ':app'"),
    # A file's path where a module's name belongs (until 2026-12-06 "No module named
    # 'spec_ok.py'; 'spec_ok' is not a package", or for ./spec_ok.py a TypeError about
    # relative imports), and where a module is looked for.
    ("spec_ok.py:app", "'spec_ok.py' is a file's path; MODULE is a module's name, as "
                       "Python imports it from the current folder: spec_ok:app"),
    ("./spec_ok.py", "'./spec_ok.py' is a file's path; MODULE is a module's name, as "
                     "Python imports it from the current folder: spec_ok"),
    ("spec_missing:app", "No module named 'spec_missing' (modules are imported from the "
                         "current folder, "),
]

#: Every command that takes MODULE:APP, with the arguments it needs to reach it.
COMMANDS = {
    "worker": ("worker", "{spec}"),
    "mcp": ("mcp", "{spec}"),
    "serve": ("serve", "--app", "{spec}", "--port", "1"),
    "start": ("start", "noop", "--app", "{spec}"),
    "signal": ("signal", "r1", "go", "--app", "{spec}"),
    "retry": ("retry", "r1", "--app", "{spec}"),
    "fork": ("fork", "r1", "--at", "0", "--app", "{spec}"),
    "migrate-runs": ("migrate-runs", "--from", "a", "--to", "b", "--app", "{spec}"),
    "export": ("export", "r1", "--app", "{spec}"),
    "replay": ("replay", "--check", "{spec}", "history.json"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
async def test_a_spec_that_names_no_app_exits_2(command: str, tmp_path: Path) -> None:
    for name, text in MODULES.items():
        (tmp_path / name).write_text(text)
    url = f"sqlite:///{tmp_path}/tether.db"
    async with App(url):  # a store, for the commands that only read one
        pass
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    for spec, says in CASES:
        argv = [a.format(spec=spec) for a in COMMANDS[command]]
        done = forked.run([sys.executable, "-m", "tether", *argv, "--db", url],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (spec, done.returncode, done.stderr)
        assert_one_line_error(done, says)


async def test_start_with_app_refuses_an_input_the_workflow_cannot_take(
        tmp_path: Path) -> None:
    """``tether start crawl --app tour:app`` without ``--input`` (or with one argument
    too many) started a run that failed on the worker with a ``TypeError``: with the
    code at hand, it is bad input (exit 2) naming the signature, and no run starts."""
    (tmp_path / "spec_flow.py").write_text(
        "from tether import App\napp = App()\n\n"
        "@app.workflow\nasync def crawl(pages: int, depth: int = 1) -> list[str]:\n"
        "    return []\n")
    url = f"sqlite:///{tmp_path}/tether.db"
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}

    def start(*more: str) -> subprocess.CompletedProcess[str]:
        return forked.run([sys.executable, "-m", "tether", "start", "crawl", "--app",
                           "spec_flow:app", "--db", url, *more], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)

    for given, says in ((None, "--input [] does not fit crawl(pages: int, depth: int = 1): "
                               "missing a required argument: 'pages'"),
                        ("[1, 2, 3]", "--input [1, 2, 3] does not fit crawl(pages: int, "
                                      "depth: int = 1): too many positional arguments"),
                        # (a type its annotation refuses: it was started, and the
                        # workflow computed with the text)
                        ('["three"]', '--input ["three"] does not fit crawl(pages: int, '
                                      "depth: int = 1): argument 'pages' takes int, not a "
                                      'string: "three"')):
        done = start(*(() if given is None else ("--input", given)))
        assert done.returncode == 2, done.stderr
        assert_one_line_error(done, says)
    assert not (tmp_path / "tether.db").exists()  # nothing started
    fine = start("--input", "[3, 2]", "--id", "c-1")
    assert fine.returncode == 0 and fine.stdout.strip() == "c-1", fine.stderr
    # `tether fork --app` judges its --input by the same rule (it took any).
    for given, says in (('[3, "deep"]', "argument 'depth' takes int, not a string: "
                                        '"deep"'),
                        ("[1, 2, 3]", "too many positional arguments")):
        done = forked.run([sys.executable, "-m", "tether", "fork", "c-1", "--at", "0",
                           "--app", "spec_flow:app", "--db", url, "--input", given],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert_one_line_error(done, f"--input {given} does not fit crawl(pages: int, depth: "
                                    f"int = 1): {says}")
    async with App(url) as app:
        assert [r.run_id for r in await app.list_runs()] == ["c-1"]


async def test_start_with_app_and_no_check_args_starts_what_the_code_refuses(
        tmp_path: Path) -> None:
    """``tether start crawl --app tour:app --no-check-args``: the code at hand is not
    the workers' (another deploy, whose signature changed), so the --input it refuses is
    started all the same, for the workers to judge."""
    (tmp_path / "spec_flow.py").write_text(
        "from tether import App\napp = App()\n\n"
        "@app.workflow\nasync def crawl(pages: int) -> list[str]:\n"
        "    return []\n")
    url = f"sqlite:///{tmp_path}/tether.db"
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    done = forked.run([sys.executable, "-m", "tether", "start", "crawl", "--app",
                       "spec_flow:app", "--db", url, "--input", '[3, "deep"]', "--id", "c-1",
                       "--no-check-args"], cwd=tmp_path, env=env, capture_output=True,
                      text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "c-1", done.stderr
    async with App(url) as app:
        assert (await app.get_run("c-1")).input == [3, "deep"]


async def test_start_with_queue_and_id_for_a_workflow_whose_parameters_are_so_named(
        tmp_path: Path) -> None:
    """``tether start``'s input is positional, so ``--queue`` and ``--id`` are the
    start's even when the workflow has parameters named ``queue`` and ``run_id`` (which
    ``App.start`` refuses to take as its keywords while they are unfilled)."""
    (tmp_path / "spec_named.py").write_text(
        "from tether import App\napp = App()\n\n"
        "@app.workflow\nasync def route(x: int, queue: str = 'q', run_id: str = '') -> str:\n"
        "    return queue\n")
    url = f"sqlite:///{tmp_path}/tether.db"
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    done = forked.run([sys.executable, "-m", "tether", "start", "route", "--app",
                       "spec_named:app", "--db", url, "--input", "[1]", "--id", "n-1",
                       "--queue", "fast"], cwd=tmp_path, env=env, capture_output=True,
                      text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "n-1", done.stderr
    async with App(url) as app:
        run = await app.get_run("n-1")
        assert (run.queue, run.input) == ("fast", [1])


async def test_a_worker_given_a_module_alone_serves_its_one_app(tmp_path: Path) -> None:
    """``tether worker MODULE`` without ``:APP`` serves the one App the module holds, as
    its ``--help`` says now; an App bound under two names is one (it was counted twice:
    "has 2 App objects: name one")."""
    (tmp_path / "spec_alone.py").write_text(
        "from tether import App\napp = App()\napplication = app\n\n"
        "@app.workflow\nasync def double(n: int) -> int:\n    return 2 * n\n")
    url = f"sqlite:///{tmp_path}/tether.db"
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    helped = forked.run([sys.executable, "-m", "tether", "worker", "--help"], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=60)
    assert "MODULE alone takes the one App the module holds" in " ".join(
        helped.stdout.split())
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = forked.Popen([sys.executable, "-m", "tether", "worker", "spec_alone", "--db",
                             url], cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        started = forked.run([sys.executable, "-m", "tether", "start", "double", "--input",
                              "[21]", "--id", "d-1", "--db", url], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr
        async with App(url) as app:
            assert await app.handle("d-1").result(timeout=60) == 42, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
