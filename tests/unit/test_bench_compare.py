"""``bench/compare`` as a user meets it: its command line, the table and JSON it builds
from the rounds, and what it leaves behind. No figure is measured here: the tool runs
with the smallest sizes, and only its parsing, arithmetic and cleanup are checked."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    return importlib.import_module("bench.compare.__main__")


def run_tool(*argv: str, tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python bench/compare ARGV`` in a process of its own, its temporary files under
    ``tmp``."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, str(ROOT / "bench" / "compare"), *argv], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("argv", [
    ["--rounds", "0"], ["--steps", "0"], ["--runs", "-1"], ["--agent-runs", "0"],
    ["--starts", "0"], ["--timeout", "0"], ["--stores", ","], ["--systems", ","],
    ["--workloads", ""], ["--systems", "tether,tether-before"], ["--stores", "mysql"],
    ["--render", "no-such-file.json"], ["--render", "pyproject.toml"],
    ["--json", "/proc/no-such-folder/compare.json"], ["--before", "no-such-revision"],
])
def test_a_bad_command_line_is_one_error_line_before_anything_runs(
        argv: list[str], tmp_path: Path) -> None:
    """A mistake stops the tool at once with exit 2 and one ``error:`` line (after
    argparse's usage), not a traceback, a measurement that fails in every round, a
    division by zero, or a run that measures the installed Tether as ``tether-before``."""
    out = tmp_path / "out.json"
    argv = [*argv, "--json", str(out)] if "--json" not in argv else argv
    proc = run_tool(*argv, tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bench/compare: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "a temporary folder left behind"


def test_quick_keeps_the_sizes_given(compare: ModuleType) -> None:
    """``--quick`` sets the sizes not given; it overrode ``--steps``/``--runs`` given."""
    args = compare.parse_args(["--quick", "--steps", "50"])
    assert (args.steps, args.runs) == (50, 200)
    args = compare.parse_args([])
    assert (args.steps, args.runs) == (1000, 1000)
    args = compare.parse_args(["--systems", "tether,tether", "--before", "HEAD"])
    assert args.systems == ["tether", "tether-before"]


def documented_command_lines() -> list[str]:
    """Each ``bench/compare ...`` line of README.md's and docs/performance.md's code
    blocks, and of the tool's own docstring (its comment dropped)."""
    found = []
    texts = [(ROOT / "bench" / "compare" / "__main__.py").read_text().split('"""')[1]]
    for page in ("README.md", "docs/performance.md"):
        texts += re.findall(r"^```\w*\n(.*?)^```", (ROOT / page).read_text(), re.S | re.M)
    for text in texts:
        for line in text.splitlines():
            if "bench/compare" in line and "python" in line:
                found.append(line.split("bench/compare", 1)[1].split("#")[0].strip())
    return found


@pytest.mark.parametrize("line", documented_command_lines())
def test_the_documented_command_lines_parse(line: str, compare: ModuleType) -> None:
    compare.parse_args([w for w in shlex.split(line) if w != "..."] if line else [])


def leftovers(tmp: Path) -> list[str]:
    """The tool's files left in its TMPDIR (``tether-UID`` is the SQLite store's wake-up
    folder, shared by every Tether process of the user, not the tool's)."""
    return sorted(p.name for p in tmp.iterdir() if not re.fullmatch(r"tether-\d+", p.name))


def test_a_finished_run_leaves_no_files_behind(tmp_path: Path) -> None:
    """The run's temporary folder (SQLite stores, recovery marks, Restate's data and
    log, the --before export) goes at the end: it stayed in /tmp after every run."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.json"
    proc = run_tool("--systems", "tether", "--stores", "sqlite", "--workloads", "seq",
                    "--steps", "5", "--rounds", "1", "--json", str(out), tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    assert leftovers(tmp) == []


def descendants(pid: int) -> dict[int, str]:
    """The processes below ``pid`` now (pid: command line)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                with contextlib.suppress(OSError):
                    found[child] = (Path(f"/proc/{child}/cmdline").read_bytes()
                                    .replace(b"\0", b" ").decode())
                    frontier.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie that init has not reaped yet is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.postgres
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_leaves_no_process_database_or_file(
        signum: int, tmp_path: Path) -> None:
    """Ctrl-C (or SIGTERM) sent to the tool alone while a measurement runs: the
    measurement's process and what it started (agent-llm's scripted LLM server) are
    killed, its PostgreSQL database dropped, its files removed, and the tool says so
    in one line. Before, SIGINT left the LLM server running (the child was killed, its
    own child orphaned) and SIGTERM left all of it and the database."""
    from tests.conftest import IN_CI, PG_ADMIN_URL, pg_reason

    if (reason := pg_reason()) is not None:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    import psycopg

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "TETHER_BENCH_PG": PG_ADMIN_URL}
    tool = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "compare"), "--systems", "tether",
         "--stores", "postgres", "--workloads", "agent-llm", "--agent-runs", "2",
         "--rounds", "1", "--json", str(tmp_path / "out.json")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            below = descendants(tool.pid)
            if any("tether.testing.llm_server" in c for c in below.values()):
                break
            assert tool.poll() is None, tool.communicate()
            assert time.monotonic() < deadline, "the measurement did not start"
            time.sleep(0.05)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            dbs = c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                            (f"tether_cmp_{tool.pid}_%",)).fetchall()
        assert dbs, "the measurement's database is not there"
        tool.send_signal(signum)
        _, err = tool.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(tool.pid, signal.SIGKILL)
        tool.wait()
    assert tool.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("bench/compare: interrupted; "), err
    assert "Traceback" not in err
    assert [c for p, c in below.items() if alive(p)] == []
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        assert c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                         (f"tether_cmp_{tool.pid}_%",)).fetchall() == []
    assert leftovers(tmp) == []


def test_a_peer_that_does_not_install_is_left_out_and_said_so(tmp_path: Path) -> None:
    """The peers' environment cannot be created: Tether is measured alone, and the
    output (before and after the table) and the JSON say which system was left out."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.json"
    env_venv = "/proc/no-such-folder/venv"  # (nothing can be created there)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare"), "--systems", "tether,dbos",
         "--stores", "sqlite", "--workloads", "seq", "--steps", "5", "--rounds", "1",
         "--json", str(out)],
        env={**os.environ, "TMPDIR": str(tmp), "TETHER_BENCH_PEERS_VENV": env_venv},
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "could not install the peers" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"wrote {out}"
    assert f"left out: dbos: could not be installed into {env_venv}" in proc.stdout
    report = json.loads(out.read_text())
    assert report["left_out"] == {"dbos": f"could not be installed into {env_venv}"}
    assert {m["system"] for m in report["rounds"][0]["measurements"]} == {"tether"}


def test_a_peer_that_crashes_is_reported_and_the_rest_runs(tmp_path: Path) -> None:
    """A peers' environment whose interpreter fails at once (installed, then broken):
    each of its measurements is an error, listed after the table; Tether is still
    measured; the JSON's versions say the peers' are unknown. Before, reading the
    peers' versions raised CalledProcessError at the end of round 1 and the run was
    lost with its JSON."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.json"
    venv = tmp_path / "peers"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\necho 'ImportError: a broken peer' >&2\nexit 3\n")
    python.chmod(0o755)
    (venv / ".requirements").write_text(
        (ROOT / "bench" / "compare" / "requirements-peers.txt").read_text())
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare"), "--systems", "tether,dbos,langgraph",
         "--stores", "sqlite", "--workloads", "seq", "--steps", "5", "--rounds", "1",
         "--json", str(out)],
        env={**os.environ, "TMPDIR": str(tmp), "TETHER_BENCH_PEERS_VENV": str(venv)},
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    for system in ("dbos", "langgraph"):
        assert (f"failed: round 1 seq sqlite {system}: ImportError: a broken peer"
                in proc.stdout), proc.stdout
    report = json.loads(out.read_text())
    assert report["versions"]["dbos"] == "unknown (CalledProcessError)"
    assert [row["system"] for row in report["summary"]] == ["tether"]


def measurement(workload: str, system: str, rnd: int, limit: float,
                **figures: float | str) -> dict[str, object]:
    return {**figures, "workload": workload, "store": "sqlite", "system": system,
            "round": rnd, "limit_us": limit}


#: Two rounds as the tool records them: seq and throughput, Tether, DBOS and a
#: LangGraph measurement that failed; the limit measured before each group.
ROUNDS = [
    {"round": 0, "measurements": [
        measurement("seq", "tether", 0, 100, us_per_step=200),
        measurement("seq", "dbos", 0, 100, us_per_step=1000),
        measurement("seq", "langgraph", 0, 100, error="crashed"),
        measurement("throughput", "tether", 0, 100, runs_per_s=400, peak_rss_mb=40),
        measurement("throughput", "dbos", 0, 100, runs_per_s=40, peak_rss_mb=80)]},
    {"round": 1, "measurements": [
        measurement("seq", "dbos", 1, 150, us_per_step=600),
        measurement("seq", "tether", 1, 150, us_per_step=300),
        measurement("seq", "langgraph", 1, 150, us_per_step=900),
        measurement("throughput", "dbos", 1, 130, runs_per_s=20, peak_rss_mb=100),
        measurement("throughput", "tether", 1, 130, runs_per_s=500, peak_rss_mb=50)]},
]


def test_the_table_ratios_come_from_the_same_round(
        compare: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {(r["workload"], r["system"]): r for r in compare.summarize(ROUNDS)}
    seq = rows["seq", "dbos"]
    assert (seq["min"], seq["median"], seq["max"], seq["n"]) == (600, 800, 1000, 2)
    assert seq["tether_over_peer"] == [200 / 1000, 300 / 600]  # round by round
    assert seq["times_limit"] == [1000 / 100, 600 / 150]
    # a round where the peer failed has no ratio; Tether's own row has none
    assert rows["seq", "langgraph"]["tether_over_peer"] == [300 / 900]
    assert rows["seq", "tether"]["tether_over_peer"] is None
    assert rows["throughput", "dbos"]["tether_over_peer"] == [400 / 40, 500 / 20]
    # steps/s times one commit's time: 10 steps a run
    assert rows["throughput", "tether"]["times_limit"] == [400 * 10 * 100 / 1e6,
                                                           500 * 10 * 130 / 1e6]
    # peak RSS is compared too (it had no ratio)
    assert rows["rss", "dbos"]["tether_over_peer"] == [40 / 80, 50 / 100]
    assert rows["rss", "tether"]["median"] == 45

    compare.print_table(compare.summarize(ROUNDS), ROUNDS)
    table = capsys.readouterr().out
    # the limit: one figure per round and workload (100, 100, 150, 130), the same in
    # the printed table and in the Markdown one (a set of figures made them differ)
    assert re.search(r"limit: SQLite commit.*\s100\.0\s+115\.0\s+150\.0\s+µs", table)
    line = next(t for t in table.splitlines() if t.startswith("seq ") and " dbos " in t)
    assert "0.350 (0.200-0.500)" in line and line.endswith("7.00")
    line = next(t for t in table.splitlines() if t.startswith("rss ") and " dbos " in t)
    assert "0.500 (0.500-0.500)" in line
    md = compare.markdown({"rounds": ROUNDS, "summary": []})
    assert "Limit, sqlite: one commit 115 µs median (100-150)." in md
    assert "| rss | sqlite | dbos | 90.0 (80.0-100.0) MB peak RSS | 0.5 (0.5-0.5) |  |" in md


def test_a_new_peers_environment_gets_restates_sdk_again(
        compare: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Restate's SDK goes into the peers' environment, its server into
    bench/.peers-node: the SDK's stamp is kept with the environment. It was kept with
    the server, so a peers' environment made anew (deleted to reinstall, or another
    one named by TETHER_BENCH_PEERS_VENV) never got the SDK back and every Restate
    measurement failed with 'No module named restate'. (The environment's interpreter
    here is a script that logs what it is asked to install; the server is installed.)"""
    venv, node = tmp_path / "peers", tmp_path / "node"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    python.chmod(0o755)
    binary = node / "node_modules" / "@restatedev" / "restate-server-test" / "bin"
    binary.mkdir(parents=True)
    (binary / "restate-server").write_text("")
    req = (ROOT / "bench" / "compare" / "requirements-restate.txt").read_text()
    (node / ".installed").write_text(f"{req}server {compare.RESTATE_SERVER}\n")
    monkeypatch.setattr(compare, "PEERS_VENV", venv)
    monkeypatch.setattr(compare, "PEERS_PY", python)
    monkeypatch.setattr(compare, "PEERS_NODE", node)
    assert compare.ensure_restate()
    assert "pip install -q -r" in log.read_text()
    assert (venv / ".requirements-restate").read_text() == req
    log.unlink()
    assert compare.ensure_restate()  # installed: nothing run again
    assert not log.exists()


def test_an_unreachable_postgresql_is_one_line_before_the_run(tmp_path: Path) -> None:
    """Before, the run measured the SQLite group, then retried the PostgreSQL limit's
    CREATE DATABASE for a minute and stopped with a traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # (closed: nothing listens there)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare"), "--systems", "tether",
         "--workloads", "seq", "--steps", "5", "--rounds", "1",
         "--json", str(tmp_path / "out.json")],
        env={**os.environ, "TMPDIR": str(tmp_path),
             "TETHER_BENCH_PG": f"postgresql://postgres@127.0.0.1:{port}/postgres"},
        capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"bench/compare: PostgreSQL at postgresql://postgres@127.0.0.1:"
                           f"{port}/postgres (TETHER_BENCH_PG) is unreachable: ")
    assert list(tmp_path.iterdir()) == []


def test_help_says_what_each_workload_measures(compare: ModuleType) -> None:
    """``--help`` (which the README points to) named the workloads without saying what
    they measure; it now ends with the docstring's list."""
    text = compare.build_parser().format_help()
    workloads = text[text.index("\nWorkloads:\n"):]
    for name in compare.WORKLOADS:
        assert re.search(rf"^  {re.escape(name)} +\S", workloads, re.M), name
