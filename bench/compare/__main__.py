"""Tether beside its peers: the same workloads on the same stores, interleaved rounds.

    .venv/bin/python bench/compare                      # all workloads, 3 rounds, ~20 min
    .venv/bin/python bench/compare --quick              # smaller sizes, a few minutes
    .venv/bin/python bench/compare --stores sqlite --workloads seq,throughput
    .venv/bin/python bench/compare --render bench/results/compare.json   # Markdown

Installs the peers (pinned in ``requirements-peers.txt``: DBOS, LangGraph with its SQLite
and PostgreSQL checkpointers) into ``bench/.venv-peers`` (or ``TETHER_BENCH_PEERS_VENV``)
on first use, and reuses it while that file is unchanged; Tether runs from the
interpreter that runs this file. Restate, when it installs (its Python SDK and Hypercorn
pinned in ``requirements-restate.txt``, into the same environment; its server,
``@restatedev/restate-server`` at ``RESTATE_SERVER``, from npm into ``bench/.peers-node``),
is measured in the SQLite rows: a single node with its own embedded log (RocksDB, its
write-ahead log fsynced, the server's default), started fresh for each measurement as a
process of its own. A system that cannot be installed is left out, and the output and
the JSON (``left_out``) say so; a measurement that fails is listed after the table.

Every measurement is a fresh process (``sys_<system>.py``) on a fresh store: a new SQLite
file or a new PostgreSQL database on ``TETHER_BENCH_PG`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), dropped afterwards. A round runs every
(workload, store, system) once, systems in a rotated order; ratios are taken inside one
round, so a machine that is slower in one round moves both sides of a ratio.

Durability is equal for all: each step's outcome is committed power-loss safe before
the next step runs (SQLite WAL with synchronous=FULL, PostgreSQL synchronous_commit=on).
``tether-before`` (with ``--before REV``) is Tether at another revision, for a change's
before/after ratio from the same rounds. ``tether-relaxed`` (SQLite synchronous=NORMAL,
PostgreSQL synchronous_commit=off: survives a process kill, not power loss) is shown
apart and not compared.

Workloads:
  seq         1 run x --steps trivial steps: µs per step
  throughput  --runs runs x 10 steps in one process, the starts timed: runs/s; peak RSS
  recovery    spawn a process -> the run a SIGKILLed process left resumes its next step
  agent       --agent-runs concurrent runs of 20 steps that each await 50 ms: overhead
              over the same code with no durability, measured in the same process
  agent-llm   the same shape against the scripted OpenAI-compatible server
              (``tether.testing.llm_server``, a process of its own, every reply after
              50 ms): --agent-runs runs of a 20-turn conversation, each turn a durable
              ``LLM.chat`` (new messages stored, reply, tokens and cost journaled),
              against the same conversations outside a workflow (plain provider calls
              through the same client), in the same process (Tether only: the peers have
              no durable LLM call)
  starts      --starts runs started by one App.start_many, no worker: starts/s (Tether
              only: the peers have no bulk start that does not also run the workflow)
and before each workload on each store, the limit: one SQLite commit (WAL,
synchronous=FULL, one row) or one PostgreSQL commit round trip (one-row INSERT,
autocommit), so every figure is also shown as a multiple of the limit measured next to
it. Writes a JSON file with every raw figure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from bench.core import pg_committer, sqlite_committer  # noqa: E402  (the limits)

#: The peers' virtual environment (``TETHER_BENCH_PEERS_VENV``: another one, such as one
#: shared by several checkouts).
PEERS_VENV = Path(os.environ.get("TETHER_BENCH_PEERS_VENV", ROOT / "bench" / ".venv-peers"))
PEERS_PY = PEERS_VENV / "bin" / "python"
#: Where npm installs the Restate server, and the version installed.
PEERS_NODE = ROOT / "bench" / ".peers-node"
RESTATE_SERVER = "1.7.12"
ADMIN = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SYSTEMS = ["tether", "dbos", "langgraph", "restate", "tether-relaxed", "tether-before"]
#: Measured unless --systems says otherwise.
DEFAULT_SYSTEMS = ["tether", "dbos", "langgraph", "restate", "tether-relaxed"]
#: The peers compared with Tether (a ratio per round).
PEERS = ("dbos", "langgraph", "restate", "tether-before")
#: --before REV: that revision's src/, exported to a temporary folder.
BEFORE_SRC = ""
WORKLOADS = ["seq", "throughput", "recovery", "agent", "agent-llm", "starts"]
#: Workloads measured for Tether's systems only.
TETHER_ONLY = {"starts", "agent-llm"}
#: What each workload reports, and whether more is better.
METRIC = {"seq": ("us_per_step", "µs/step", False),
          "throughput": ("runs_per_s", "runs/s", True),
          "recovery": ("recovery_ms", "ms", False),
          "agent": ("overhead_pct", "% over asyncio", False),
          "agent-llm": ("overhead_pct", "% over plain calls", False),
          "starts": ("starts_per_s", "starts/s", True),
          "rss": ("peak_rss_mb", "MB peak RSS", False)}


# -- setup ------------------------------------------------------------------------------


def ensure_peers() -> bool:
    """Create bench/.venv-peers with the pinned peers unless it has them already."""
    req = HERE / "requirements-peers.txt"
    stamp = PEERS_VENV / ".requirements"
    if PEERS_PY.exists() and stamp.exists() and stamp.read_text() == req.read_text():
        return True
    print(f"installing the peers into {PEERS_VENV} ...", flush=True)
    try:
        if not PEERS_PY.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run([str(PEERS_PY), "-m", "pip", "install", "-q", "-r", str(req)],
                       check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"could not install the peers ({exc}); running Tether alone", file=sys.stderr)
        return False
    stamp.write_text(req.read_text())
    return True


def restate_binary() -> Path | None:
    """The installed ``restate-server`` (its platform's npm package), if any."""
    found = sorted(PEERS_NODE.glob("node_modules/@restatedev/restate-server-*/bin/restate-server"))
    return found[0] if found else None


def ensure_restate() -> bool:
    """Install Restate unless installed: its Python SDK and Hypercorn into the peers'
    environment, its server from npm into bench/.peers-node. False (with the reason
    printed) when either cannot be installed. Each part has its stamp where it is
    installed: a peers' environment made anew gets the SDK again."""
    req = HERE / "requirements-restate.txt"
    sdk_stamp = PEERS_VENV / ".requirements-restate"
    server_stamp = PEERS_NODE / ".installed"
    wanted = f"{req.read_text()}server {RESTATE_SERVER}\n"
    sdk = sdk_stamp.exists() and sdk_stamp.read_text() == req.read_text()
    server = (server_stamp.exists() and server_stamp.read_text() == wanted
              and restate_binary() is not None)
    if sdk and server:
        return True
    parts = ([] if sdk else [f"SDK into {PEERS_VENV}"]) + (
        [] if server else [f"server {RESTATE_SERVER} into {PEERS_NODE}"])
    print(f"installing Restate ({', '.join(parts)}) ...", flush=True)
    try:
        if not sdk:
            subprocess.run([str(PEERS_PY), "-m", "pip", "install", "-q", "-r", str(req)],
                           check=True)
            sdk_stamp.write_text(req.read_text())
        if not server:
            PEERS_NODE.mkdir(parents=True, exist_ok=True)
            subprocess.run(["npm", "install", "--prefix", str(PEERS_NODE), "--no-audit",
                            "--no-fund", "--loglevel=error",
                            f"@restatedev/restate-server@{RESTATE_SERVER}"], check=True,
                           stdout=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"could not install Restate ({exc}); running without it", file=sys.stderr)
        return False
    if restate_binary() is None:
        print("npm installed no restate-server binary for this platform; running without "
              "Restate", file=sys.stderr)
        return False
    server_stamp.write_text(wanted)
    return True


def package_versions(python: str, names: list[str]) -> dict[str, str]:
    """The installed version of each package in ``python``'s environment ("not
    installed" for one that is not: a broken peers' environment is reported in the
    JSON, not a traceback that loses the round)."""
    code = ("import importlib.metadata as m, json, sys\n"
            "def v(p):\n"
            "    try:\n"
            "        return m.version(p)\n"
            "    except m.PackageNotFoundError:\n"
            "        return 'not installed'\n"
            "print(json.dumps({p: v(p) for p in sys.argv[1:]}))")
    try:
        return dict(json.loads(subprocess.run(
            [python, "-c", code, *names], capture_output=True, text=True,
            check=True).stdout))
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        return dict.fromkeys(names, f"unknown ({type(exc).__name__})")


def versions(peers: bool, restate: bool = False) -> dict[str, str]:
    out = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    out.update(package_versions(sys.executable, ["tether", "psycopg"]))
    if peers:
        out.update(package_versions(str(PEERS_PY), [
            "dbos", "langgraph", "langgraph-checkpoint-sqlite",
            "langgraph-checkpoint-postgres"]))
    binary = restate_binary()
    if restate and binary is not None:
        out.update(package_versions(str(PEERS_PY), ["restate-sdk", "hypercorn"]))
        out["restate-server"] = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True,
            check=False).stdout.strip().removeprefix("restate-server ")
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(ADMIN) as c:
            out["postgresql"] = str(c.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    return out


# -- stores -----------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_store(kind: str, folder: Path) -> Iterator[str]:
    """A new SQLite file or PostgreSQL database, removed afterwards."""
    if kind == "sqlite":
        path = folder / f"{uuid.uuid4().hex[:12]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{path}{suffix}")
        return

    name = f"tether_cmp_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    created = False
    try:
        try:
            admin(f'CREATE DATABASE "{name}"')
        except KeyboardInterrupt:
            created = True  # (perhaps: the server may have created it just before)
            raise
        created = True
        yield ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        if created:
            with uninterrupted():
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP held back while cleaning up (a second Ctrl-C would
    leave a database or a process behind); one that came meanwhile acts after."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def spawn(argv: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    """A measurement's process, leading a process group of its own: ``reap`` kills the
    group whole (the process and what it started, such as agent-llm's scripted LLM
    server), however the measurement ends."""
    return subprocess.Popen(argv, env=env, start_new_session=True, text=True, **kwargs)


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill what is left of ``proc``'s process group and wait for ``proc``."""
    with uninterrupted():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


#: The server process of each fresh_restate URL (its memory is counted with the handlers').
RESTATE_PIDS: dict[str, int] = {}


def peak_rss_mb(pid: int) -> float | None:
    """A running process's peak resident set (VmHWM), in MB, if it can be read."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def fresh_restate(folder: Path) -> Iterator[str]:
    """A new Restate server (a new data folder, ports of its own), stopped and removed
    afterwards: its URL for ``sys_restate.py``, with a port for the handlers' process."""
    binary = restate_binary()
    assert binary is not None
    ingress, admin_port, node, service = (free_port() for _ in range(4))
    data = folder / f"restate-{uuid.uuid4().hex[:8]}"
    # The server leaves a dozen empty invoker-* folders in its TMPDIR each time: in
    # its data folder, they go with it.
    (data / "tmp").mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(data / "tmp"), "RESTATE_DISABLE_TELEMETRY": "true",
           "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
           "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin_port}",
           "RESTATE_BIND_ADDRESS": f"127.0.0.1:{node}",
           "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{node}/",
           "RESTATE_LOG_FILTER": "error"}
    log_path = folder / f"restate-server-{data.name}.log"
    log = open(log_path, "ab")  # (closed below)
    proc = subprocess.Popen([str(binary), "--base-dir", str(data), "--node-name", "bench",
                             "--listen-mode", "tcp", "--no-logo"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                # (Its log is in the run's temporary folder, removed at the end.)
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"restate-server exited ({proc.returncode}): "
                                   f"{' / '.join(tail) or 'no output'}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/health",
                                            timeout=1) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError("restate-server did not come up within 60 s")
            time.sleep(0.05)
        url = f"restate://127.0.0.1:{ingress}?admin={admin_port}&service={service}"
        RESTATE_PIDS[url] = proc.pid
        yield url
    finally:
        with uninterrupted():
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            shutil.rmtree(data, ignore_errors=True)


def admin(sql: str) -> None:
    """Run ``sql`` on the admin database; retried for a minute (the server may be
    restarting: other people's tests share it)."""
    import psycopg

    for attempt in range(60):
        try:
            with psycopg.connect(ADMIN, autocommit=True, connect_timeout=5) as c:
                c.execute(sql)
            return
        except psycopg.OperationalError:
            if attempt == 59:
                raise
            time.sleep(1)


def sqlite_commit_us(folder: Path, n: int = 300) -> float:
    """µs per one-row commit, WAL with synchronous=FULL (what Tether's SQLite store does)."""
    path = folder / "raw.db"
    commits, close = sqlite_committer(path)
    try:
        return commits(n)
    finally:
        close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{path}{suffix}")


def pg_commit_us(url: str, n: int = 300) -> float:
    """µs per one-row INSERT committed in its own transaction, one round trip each."""
    commits, close = pg_committer(url)
    try:
        return commits(n)
    finally:
        close()


def measure_limit(store: str, folder: Path) -> float:
    if store == "sqlite":
        return sqlite_commit_us(folder)
    with fresh_store("postgres", folder) as url:
        return pg_commit_us(url)


# -- one measurement ----------------------------------------------------------------------


def command(system: str, workload: str, url: str, args: argparse.Namespace,
            marks: str | None = None) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    py = sys.executable
    script = "sys_tether.py"
    if system == "tether-relaxed":
        if url.startswith("sqlite:///"):
            url += "?synchronous=normal"
        else:
            env["PGOPTIONS"] = "-c synchronous_commit=off"
    elif system == "tether-before":
        env["PYTHONPATH"] = os.pathsep.join(
            [BEFORE_SRC, *filter(None, [env.get("PYTHONPATH")])])
    if system in ("tether", "tether-relaxed"):
        # This tree's Tether, not whichever checkout the virtualenv installed in editable
        # mode (a bench/compare run from another worktree measured that one).
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    elif system in ("dbos", "langgraph", "restate"):
        py, script = str(PEERS_PY), f"sys_{system}.py"
    argv = [py, str(HERE / script), workload, "--store", url, "--steps", str(args.steps),
            "--runs", str(args.runs), "--agent-runs", str(args.agent_runs)]
    if system.startswith("tether"):
        argv += ["--starts", str(args.starts)]
    if marks:
        argv += ["--marks", marks]
    return argv, env


def last_json(out: str) -> dict[str, Any]:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise ValueError("no JSON line in the output")


def measure(system: str, workload: str, url: str, args: argparse.Namespace,
            folder: Path) -> dict[str, Any]:
    if workload == "recovery":
        return measure_recovery(system, url, args, folder)
    argv, env = command(system, workload, url, args)
    proc = spawn(argv, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no result within --timeout {args.timeout:g} s") from None
    finally:
        reap(proc)
    if proc.returncode != 0:
        raise RuntimeError(err.strip().splitlines()[-1] if err.strip()
                           else f"exit {proc.returncode}")
    return last_json(out)


def measure_recovery(system: str, url: str, args: argparse.Namespace,
                     folder: Path) -> dict[str, Any]:
    """Kill -9 a process in its run's step 1; time a new process's spawn to step 1
    running again."""
    marks = folder / f"marks-{uuid.uuid4().hex[:8]}"
    marks.touch()

    def lines() -> list[str]:
        return marks.read_text().splitlines()

    argv, env = command(system, "recover-a", url, args, str(marks))
    first = spawn(argv, {**env, "BENCH_HANG": "1"}, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + args.timeout
        while len(lines()) < 2:
            if first.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the first process did not reach step 1")
            time.sleep(0.01)
    finally:
        reap(first)  # SIGKILL in step 1
    argv, env = command(system, "recover-b", url, args, str(marks))
    t0 = time.time()
    second = spawn(argv, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = second.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError("the second process did not finish the run") from None
    finally:
        reap(second)
    done = lines()
    if len(done) < 3 or second.returncode != 0:
        raise RuntimeError(f"the run did not resume ({err.strip().splitlines()[-1:]})")
    return {"recovery_ms": (float(done[2].split()[1]) - t0) * 1000}


# -- report -----------------------------------------------------------------------------


def describe(values: list[float]) -> str:
    return (f"{min(values):>9.1f} {statistics.median(values):>9.1f} {max(values):>9.1f}")


def summarize(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (workload, store, system): min/median/max, and per-round ratios
    (Tether's figure over the system's, both from the same round). The throughput
    workload also gives a row ``rss``: its process's peak RSS, with its ratios too."""
    rows: list[dict[str, Any]] = []
    keys: list[tuple[str, str, str]] = []
    for r in rounds:
        for m in r["measurements"]:
            k = (m["workload"], m["store"], m["system"])
            if k not in keys:
                keys.append(k)
    for wl, store, system in keys:
        for shown, metric, unit in [(wl, *METRIC[wl][:2])] + (
                [("rss", "peak_rss_mb", "MB peak RSS (throughput process)")]
                if wl == "throughput" else []):
            vals, ratios, limits = [], [], []
            for r in rounds:
                mine = {m["system"]: m for m in r["measurements"]
                        if m["workload"] == wl and m["store"] == store and metric in m}
                if system not in mine:
                    continue
                v = mine[system][metric]
                vals.append(v)
                if system in PEERS and "tether" in mine and v:
                    ratios.append(mine["tether"][metric] / v)
                limit = mine[system].get("limit_us")
                if limit and shown == "seq":
                    limits.append(v / limit)
                if limit and shown == "throughput":
                    # steps/s as a multiple of one-commit-per-step
                    limits.append(v * 10 * limit / 1e6)
            if vals:
                rows.append({"workload": shown, "store": store, "system": system,
                             "unit": unit, "min": min(vals),
                             "median": statistics.median(vals), "max": max(vals),
                             "n": len(vals), "tether_over_peer": ratios or None,
                             "times_limit": limits or None})
    return rows


def limit_values(rounds: list[dict[str, Any]], store: str) -> list[float]:
    """The limit measured on ``store``: one figure per round and workload (each
    measurement carries the one measured before its group)."""
    return list({(r["round"], m["workload"]): m["limit_us"] for r in rounds
                 for m in r["measurements"]
                 if m["store"] == store and m.get("limit_us")}.values())


def print_table(rows: list[dict[str, Any]], rounds: list[dict[str, Any]]) -> None:
    for store in ("sqlite", "postgres"):
        lim = limit_values(rounds, store)
        if lim:
            what = ("SQLite commit (WAL, FULL)" if store == "sqlite"
                    else "PostgreSQL commit round trip")
            print(f"limit: {what:30} {describe(lim)}  µs")
    print()
    print(f"{'workload':11} {'store':8} {'system':15} {'min':>9} {'median':>9} {'max':>9}  "
          f"{'unit':15} {'Tether/peer (median, range)':30} {'x limit':>8}")
    for row in rows:
        ratio = ""
        if row["tether_over_peer"]:
            rs = row["tether_over_peer"]
            ratio = f"{statistics.median(rs):.3f} ({min(rs):.3f}-{max(rs):.3f})"
        times = f"{statistics.median(row['times_limit']):.2f}" if row["times_limit"] else ""
        unit = METRIC[row["workload"]][1]
        print(f"{row['workload']:11} {row['store']:8} {row['system']:15} "
              f"{describe([row['min'], row['median'], row['max']])}  {unit:15} "
              f"{ratio:30} {times:>8}")
    print("\nTether/peer: Tether's figure divided by the peer's, in the same round "
          "(below 1 is better for µs, ms and %; above 1 for runs/s). x limit: sequential "
          "µs/step over one bare commit; throughput steps/s times one commit's time "
          "(above 1: more steps than bare commits fit in a second).")


def print_problems(rounds: list[dict[str, Any]], left_out: dict[str, str]) -> None:
    """What the table does not show: the systems left out, the measurements that
    failed (a system whose every measurement failed has no row)."""
    lines = [f"left out: {system}: {why}" for system, why in left_out.items()]
    lines += [f"failed: round {r['round'] + 1} {m['workload']} {m['store']} {m['system']}: "
              f"{m['error']}" for r in rounds for m in r["measurements"] if "error" in m]
    if lines:
        print()
        print("\n".join(lines))


def write_report(args: argparse.Namespace, rounds: list[dict[str, Any]],
                 started: datetime.datetime, load_before: tuple[float, float, float],
                 systems: list[str], left_out: dict[str, str] | None = None) -> None:
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": ["bench/compare", *sys.argv[1:]],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "versions": versions("dbos" in systems or "langgraph" in systems,
                             "restate" in systems),
        "sizes": {"steps": args.steps, "runs": args.runs, "agent_runs": args.agent_runs,
                  "starts": args.starts,
                  "agent_steps": 20, "agent_delay_s": 0.05},
        "rounds_done": len(rounds), "rounds_asked": args.rounds,
        "left_out": left_out or {},
        "rounds": rounds, "summary": summarize(rounds),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


def markdown(report: dict[str, Any]) -> str:
    """The summary as a Markdown table (for README.md and docs/performance.md)."""
    rows = summarize(report["rounds"])  # (from the raw figures: as the run prints it)
    lines = ["| workload | store | system | median (min-max) | Tether ÷ system, same round "
             "| x limit |", "| --- | --- | --- | ---: | ---: | ---: |"]
    for row in rows:
        unit = METRIC[row["workload"]][1]
        ratio = ""
        if row["tether_over_peer"]:
            rs = row["tether_over_peer"]
            ratio = f"{statistics.median(rs):.3g} ({min(rs):.3g}-{max(rs):.3g})"
        times = f"{statistics.median(row['times_limit']):.2f}" if row["times_limit"] else ""
        lines.append(f"| {row['workload']} | {row['store']} | {row['system']} | "
                     f"{row['median']:,.1f} ({row['min']:,.1f}-{row['max']:,.1f}) {unit} | "
                     f"{ratio} | {times} |")
    lim = {}
    for store in ("sqlite", "postgres"):
        vals = limit_values(report["rounds"], store)
        if vals:
            lim[store] = (min(vals), statistics.median(vals), max(vals))
    for store, (lo, mid, hi) in lim.items():
        lines.append("")
        lines.append(f"Limit, {store}: one commit {mid:,.0f} µs median ({lo:,.0f}-{hi:,.0f}).")
    return "\n".join(lines)


def positive(kind: type[int] | type[float]) -> Any:
    """An argparse type: a number above zero (a zero or negative size divided by zero
    in every measurement, or measured nothing)."""
    def convert(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value
    convert.__name__ = kind.__name__  # (argparse's "invalid int value" message)
    return convert


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/compare", description=__doc__.split("\n\n")[0],
        # What each workload measures, and the limit (this file's docstring).
        epilog=__doc__[__doc__.index("Workloads:"):].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=positive(int), default=3,
                   help="interleaved rounds (default: 3)")
    p.add_argument("--stores", default="sqlite,postgres",
                   help="comma-separated: sqlite, postgres (default: both)")
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                   help=f"comma-separated, of {', '.join(SYSTEMS)} (default: "
                        f"{','.join(DEFAULT_SYSTEMS)}; restate runs in the sqlite rows only; "
                        f"tether-before needs --before)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated, of {', '.join(WORKLOADS)} (default: all)")
    p.add_argument("--steps", type=positive(int),
                   help="steps of the seq workload's run (default: 1000; --quick: 300)")
    p.add_argument("--runs", type=positive(int),
                   help="runs of the throughput workload (default: 1000; --quick: 200)")
    p.add_argument("--agent-runs", type=positive(int), default=100,
                   help="concurrent runs of the agent workloads (default: 100)")
    p.add_argument("--starts", type=positive(int), default=10000,
                   help="runs started by the starts workload (default: 10000)")
    p.add_argument("--quick", action="store_true",
                   help="--steps 300 --runs 200 unless given: a few minutes instead of ~20")
    p.add_argument("--timeout", type=positive(float), default=600,
                   help="seconds per measurement (default: 600)")
    p.add_argument("--before", metavar="REV",
                   help="also run Tether at git revision REV (system tether-before), for "
                        "before/after ratios of a change from the same rounds")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "compare.json"),
                   help="where to write every raw figure, rewritten after each round "
                        "(default: bench/results/compare.json)")
    p.add_argument("--render", metavar="FILE.json",
                   help="print FILE.json's summary as a Markdown table and exit (measures "
                        "nothing)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: a mistake is one line on stderr and exit 2 before
    anything is installed or measured. The lists become ``args.stores``,
    ``args.systems`` and ``args.workloads`` (lists, each name once)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.render:
        return args
    for flag, default, quick in (("steps", 1000, 300), ("runs", 1000, 200)):
        if getattr(args, flag) is None:
            setattr(args, flag, quick if args.quick else default)
    for flag, known in (("stores", ["sqlite", "postgres"]), ("systems", SYSTEMS),
                        ("workloads", WORKLOADS)):
        given = list(dict.fromkeys(n.strip() for n in getattr(args, flag).split(",")
                                   if n.strip()))
        if not given:
            p.error(f"--{flag}: none given (known: {', '.join(known)})")
        bad = [g for g in given if g not in known]
        if bad:
            p.error(f"unknown {flag[:-1]} {bad[0]!r} (known: {', '.join(known)})")
        setattr(args, flag, given)
    if "tether-before" in args.systems and not args.before:
        p.error("system tether-before is Tether at --before REV: give --before")
    if args.before and "tether-before" not in args.systems:
        args.systems.append("tether-before")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        try:
            text = markdown(json.loads(Path(args.render).read_text()))
        except OSError as exc:
            build_parser().error(f"--render {args.render}: {exc.strerror or exc}")
        except ValueError as exc:
            build_parser().error(f"--render {args.render}: not JSON ({exc})")
        except (KeyError, TypeError, IndexError) as exc:
            build_parser().error(f"--render {args.render}: not a bench/compare report "
                                 f"({type(exc).__name__}: {exc})")
        print(text)
        return
    try:  # can the report be written? (asked now, not after the first round's minutes)
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        existed = out.exists()
        with open(out, "a"):
            pass
        if not existed:
            out.unlink()
    except OSError as exc:
        build_parser().error(f"--json {args.json}: {exc.strerror or exc}")
    if "postgres" in args.stores and (why := postgres_unreachable()):
        print(f"bench/compare: PostgreSQL at {ADMIN} (TETHER_BENCH_PG) is unreachable: "
              f"{why}; start it, or measure --stores sqlite", file=sys.stderr)
        raise SystemExit(1)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    # Every file of the run (the --before export, SQLite stores, recovery marks,
    # Restate's data and log) is in one temporary folder, removed however the run ends.
    folder = Path(tempfile.mkdtemp(prefix="tether-compare-"))
    rounds: list[dict[str, Any]] = []
    try:
        run(args, folder, rounds)
    except KeyboardInterrupt:
        kept = (f"the {len(rounds)} rounds finished are in {args.json}" if rounds
                else "no round finished, nothing written")
        print(f"\nbench/compare: interrupted; {kept}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        with uninterrupted():
            shutil.rmtree(folder, ignore_errors=True)


def postgres_unreachable() -> str | None:
    """Why the PostgreSQL server cannot be used, if it cannot (asked before the run:
    the first PostgreSQL group came after minutes of SQLite ones, then a minute of
    retries and a traceback)."""
    import psycopg

    try:
        with psycopg.connect(ADMIN, autocommit=True, connect_timeout=5) as c:
            c.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def interrupted(signum: int, frame: Any) -> None:
    """SIGTERM and SIGHUP stop a run as Ctrl-C does: its processes are killed, its
    databases dropped and its files removed (Python's default for them exits at once)."""
    raise KeyboardInterrupt


def run(args: argparse.Namespace, folder: Path, rounds: list[dict[str, Any]]) -> None:
    """Install what is missing, then measure ``args.rounds`` rounds into ``rounds``."""
    stores, systems, workloads = args.stores, args.systems, args.workloads
    if args.before:
        global BEFORE_SRC
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "src"],
                                 capture_output=True, check=False)
        if archive.returncode != 0:
            build_parser().error(f"--before: {archive.stderr.decode().strip()}")
        dest = folder / "before"
        dest.mkdir()
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        BEFORE_SRC = str(dest / "src")
    # The systems asked for and not measured, and why: printed at the start and after
    # the table, and kept in the JSON (a run of Tether alone reads like a comparison).
    left_out: dict[str, str] = {}
    peers = [s for s in systems if s in ("dbos", "langgraph", "restate")]
    if peers and not ensure_peers():
        left_out.update(dict.fromkeys(peers, f"could not be installed into {PEERS_VENV}"))
        systems = [s for s in systems if s not in peers]
    if "restate" in systems and "sqlite" not in stores:
        systems.remove("restate")
        left_out["restate"] = "measured in the SQLite rows only, and --stores has no sqlite"
    if "restate" in systems and not ensure_restate():
        systems.remove("restate")
        left_out["restate"] = "could not be installed"
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    print(f"command: {' '.join([Path(sys.executable).name, 'bench/compare', *sys.argv[1:]])}")
    for system, why in left_out.items():
        print(f"left out: {system}: {why}")
    for rnd in range(args.rounds):
        limits: dict[str, float] = {}
        measurements: list[dict[str, Any]] = []
        order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
        for wl in workloads:
            for store in stores:
                # The disk's limit right before the group it is compared with: on a
                # shared machine it moves from minute to minute.
                limit = measure_limit(store, folder)
                limits.setdefault(store, limit)
                for system in order:
                    if wl in TETHER_ONLY and not system.startswith("tether"):
                        continue
                    if system == "restate" and store != "sqlite":
                        continue  # its own log, measured once: in the SQLite rows
                    t = time.perf_counter()
                    try:
                        with (fresh_restate(folder) if system == "restate"
                              else fresh_store(store, folder)) as url:
                            m = measure(system, wl, url, args, folder)
                            server = RESTATE_PIDS.pop(url, None)
                            server_rss = peak_rss_mb(server) if server else None
                            if server_rss is not None and "peak_rss_mb" in m:
                                # The server holds the log: its memory is the store's
                                # (Tether's SQLite store is inside its process).
                                m["handlers_peak_rss_mb"] = m["peak_rss_mb"]
                                m["server_peak_rss_mb"] = server_rss
                                m["peak_rss_mb"] += server_rss
                    except (RuntimeError, ValueError, OSError) as exc:
                        m = {"error": str(exc)}
                    m.update(workload=wl, store=store, system=system, round=rnd,
                             limit_us=limit)
                    measurements.append(m)
                    metric = METRIC[wl][0]
                    shown = f"{m[metric]:.1f}" if metric in m else f"ERROR {m['error']}"
                    print(f"round {rnd + 1}/{args.rounds} {wl:10} {store:8} {system:15} "
                          f"{shown} ({time.perf_counter() - t:.0f} s)", flush=True)
        rounds.append({"round": rnd, "limits": limits, "measurements": measurements})
        # Written after every round: a run stopped early keeps what it measured.
        write_report(args, rounds, started, load_before, systems, left_out)
    print()
    print_table(summarize(rounds), rounds)
    print_problems(rounds, left_out)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
