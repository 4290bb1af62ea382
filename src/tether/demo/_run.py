"""``tether demo``: a research agent survives ``kill -9`` of its worker, waits for a
human's approval, and finishes without paying for any model call twice.

The story, with real processes and a real SQLite file (in a temporary folder):

1. a ``tether worker`` process runs the agent ``researcher`` (``tether.demo.research``);
2. after three reasoning steps have committed, the demo kills it with SIGKILL, as a
   node restart would; step 4 (a slow web search) was running;
3. a new worker process replays steps 1-3 from the journal (no model request, no MCP
   call) and runs step 4 again;
4. the agent asks to spend budget on a report and waits, released; the demo answers
   with ``tether approve RUN_ID`` (a subprocess, as a human would);
5. the run completes; the demo prints the timeline, the tokens and cost spent and
   saved by replay, and checks the model server's request log for repeats.

With ``OPENAI_API_KEY`` (or ``ANTHROPIC_API_KEY``) set it runs against that provider;
otherwise against the local scripted model server (``tether.testing.llm_server``),
which answers like a model following the agent's instructions, and says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tether import App
from tether._fit import fit_width, wrap
from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer

RUN_ID = "demo-1"
TASK = "Should our team run its AI agents on a durable execution engine? Recommend."
KILL_AFTER = 3
TIMEOUT = 120.0


# -- the scripted model -----------------------------------------------------------------------

#: What the scripted model does after seeing n tool results: a tool call (with what it
#: says about it) or the final answer. Token counts are what a real model would bill
#: for this conversation, roughly.
PLAN: list[tuple[str, dict[str, Any], int, int]] = [
    ("define", {"term": "durable execution"}, 412, 38),
    ("search_web", {"query": "durable execution engines for AI agents"}, 560, 41),
    ("buy_report", {"title": "Durable agents 2025", "price_usd": 49.0}, 803, 52),
]
SAYS = [
    "First I need a precise definition.",
    "Now what practitioners report.",
    "The market report would settle it; it costs $49, which needs approval.",
]
ANSWER = (
    "Recommendation: yes. Durable execution journals every step, so an agent resumes "
    "after a crash without redoing completed work; teams report agent runs lost on "
    "node restarts otherwise, and replay repays no tokens for finished turns. The "
    "report confirms adoption doubled in 2025: start with the agents whose runs are "
    "longest or most expensive.")


def scripted_model(request: RecordedRequest) -> Reply:
    """Answer from the state of the conversation, as a model following the plan."""
    seen = [m for m in request.body.get("messages", []) if m.get("role") == "tool"]
    if len(seen) < len(PLAN):
        name, args, tokens_in, tokens_out = PLAN[len(seen)]
        return Reply(SAYS[len(seen)], tool_calls=[{"name": name, "arguments": args}],
                     input_tokens=tokens_in, output_tokens=tokens_out, delay=0.3)
    return Reply(ANSWER, input_tokens=1046, output_tokens=88, delay=0.3)


# -- helpers ----------------------------------------------------------------------------------


@dataclass
class _Model:
    spec: str
    base_url: str
    scripted: bool
    note: str


def _choose_model(scripted_only: bool, server: ScriptedLLMServer | None) -> _Model:
    if not scripted_only and os.environ.get("OPENAI_API_KEY"):
        return _Model("openai:gpt-4.1-mini", "", False, "OpenAI gpt-4.1-mini (OPENAI_API_KEY "
                      "is set)")
    if not scripted_only and os.environ.get("ANTHROPIC_API_KEY"):
        return _Model("anthropic:claude-haiku-4-5", "", False, "Anthropic claude-haiku-4-5 "
                      "(ANTHROPIC_API_KEY is set)")
    assert server is not None
    return _Model("openai:gpt-4.1-mini", server.base_url, True,
                  f"no OPENAI_API_KEY or ANTHROPIC_API_KEY: the local scripted model server "
                  f"at {server.base_url} (tether.testing.llm_server) plays gpt-4.1-mini, "
                  "priced as such")


@dataclass
class _Screen:
    """Where the demo prints: a terminal ``width`` columns wide, its lines wrapped to
    it, or (``width`` None) a pipe or a file, each line whole."""

    width: int | None

    def say(self, text: str, label: str = "", *, tail: str = "", max_lines: int = 12) -> None:
        """``label``, ``text`` then ``tail`` (two spaces before it); on a terminal
        wrapped, the lines after the first indented under the text, and ``tail`` whole
        (on the last line if it has room, else on one of its own)."""
        if self.width is None:
            print(label + text + (f"  {tail}" if tail else ""))
            return
        lines = wrap(text, self.width, label, max_lines=max_lines)
        if tail and len(lines[-1]) + 2 + len(tail) <= self.width:
            lines[-1] += f"  {tail}"
        elif tail:
            lines.append(" " * min(len(label), self.width // 3) + tail)
        print("\n".join(lines))


def _tether(*args: str, env: dict[str, str],
            columns: int | None = None) -> subprocess.CompletedProcess[str]:
    """``tether ARGS``' output, as it prints it into a pipe; or, with ``columns``, on a
    terminal that wide (fitted to it: what a person who runs it there sees)."""
    command = [sys.executable, "-m", "tether", *args]
    if columns is None:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    return _on_terminal(command, dict(env, COLUMNS=str(columns)))


def _on_terminal(command: list[str], env: dict[str, str],
                 timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``command`` run with its standard output on a pseudo-terminal (its width in
    ``$COLUMNS``); its standard error kept apart, in a file (a pipe left unread while
    the terminal is could fill and stall it)."""
    import pty  # (POSIX, as the demo's SIGKILL)

    leader, follower = pty.openpty()
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                    stdout=follower, stderr=err)
        finally:
            os.close(follower)
        chunks: list[bytes] = []
        end = time.monotonic() + timeout
        try:
            while select.select([leader], [], [], max(end - time.monotonic(), 0))[0]:
                try:
                    data = os.read(leader, 1 << 16)
                except OSError:  # (Linux: EIO once the command has closed the terminal)
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(leader)
        try:
            proc.wait(max(end - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    stdout = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _reasoning_steps(info: Any) -> list[dict[str, Any]]:
    """The journal's LLM turns and tool calls (not the tool listing, the clock or the
    approval signal)."""
    return [e for e in info.journal if e["kind"] == "step"
            and not e["name"].endswith(".list_tools")]


def _describe(entry: dict[str, Any], room: int | None = None) -> tuple[str, str]:
    """What a reasoning step did, in a line: the text, and the tokens a model's turn
    billed; a tool's result cut to what is left of ``room`` characters (or to 60-70)."""
    name, result = entry["name"], entry["result"]
    if name.startswith("llm:") and isinstance(result, dict):
        reply = result.get("reply", {})
        usage = reply.get("usage", {})
        calls = reply.get("tool_calls") or []
        what = (", ".join(f"asks {c['name']}({_args(c.get('arguments'))})" for c in calls)
                or "answers")
        return (f"model    {what}", f"[{usage.get('input_tokens', 0):,} in / "
                f"{usage.get('output_tokens', 0):,} out]")
    if name.startswith("mcp:") and isinstance(result, dict):
        args = entry["args"] if isinstance(entry["args"], list) else ["?"]
        head = f"MCP tool {args[0]} (stdio): "
        return head + _short(result.get("text", ""), room - len(head) if room else 60), ""
    head = f"tool     {name.split(':', 1)[-1]}: "
    return head + _short(result, room - len(head) if room else 70), ""


def _args(arguments: Any) -> str:
    if not isinstance(arguments, dict):
        return ""
    return ", ".join(f"{k}={v!r}" for k, v in arguments.items())


def _short(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: max(width - 1, 20)] + "…"


def _executions(path: str) -> list[tuple[int, str]]:
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            pid, _, what = line.strip().partition(" ")
            out.append((int(pid), what))
    return out


class _Printer:
    """Prints each reasoning step once, as it commits: on a terminal a tool's result
    cut to the line, the model's turn wrapped under it."""

    def __init__(self, screen: _Screen) -> None:
        self.shown = 0
        self.screen = screen

    def show(self, info: Any, worker: int) -> int:
        steps = [e for e in _reasoning_steps(info) if e["status"] == "ok"]
        for entry in steps[self.shown:]:
            self.shown += 1
            label = f"  step {self.shown}  (worker {worker})  "
            room = self.screen.width and self.screen.width - len(label)
            text, tokens = _describe(entry, room)
            self.screen.say(text, label, tail=tokens, max_lines=4)
        return len(steps)


# -- the demo ---------------------------------------------------------------------------------


async def run_demo(*, scripted_only: bool = False) -> int:
    """Run the demo; 0 if the run completed and the provider saw no repeated request."""
    folder = tempfile.mkdtemp(prefix="tether-demo-")
    db = f"sqlite:///{folder}/demo.db"
    log_path = os.path.join(folder, "executions.log")
    server: ScriptedLLMServer | None = None
    if scripted_only or not (os.environ.get("OPENAI_API_KEY")
                             or os.environ.get("ANTHROPIC_API_KEY")):
        server = ScriptedLLMServer(responder=scripted_model)
        await server.start()
    model = _choose_model(scripted_only, server)
    env = dict(os.environ, TETHER_DATABASE_URL=db, TETHER_DEMO_LOG=log_path,
               TETHER_DEMO_MODEL=model.spec, TETHER_DEMO_BASE_URL=model.base_url)
    screen = _Screen(fit_width(False))
    screen.say(f"{db}  (SQLite, WAL, synchronous=FULL)", "store: ")
    screen.say(model.note, "model: ")
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        with open(os.path.join(folder, f"worker-{len(procs) + 1}.log"), "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "tether", "worker",
                                     "tether.demo.research:app", "--db", db],
                                    env=env, stdout=subprocess.DEVNULL, stderr=err)
        procs.append(proc)
        return proc

    try:
        return await _story(db, env, model, server, spawn, log_path, folder, screen)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        if server is not None:
            await server.stop()


async def _until_attempt_running(app: App, run_id: str, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until a step of ``run_id`` has an attempt on record
    as running: the kill then lands in the middle of that step, as a node's restart
    would, and the new worker numbers its re-run #2 (the history is written within
    ~50 ms of a step's start; a worker killed before has no record of the attempt)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        # (A step already journaled may still show its attempt as running: its end is
        # written with the history's next batch. The step wanted has no entry yet.)
        done = {e.position for e in await app.store.journal_read(run_id)}
        if any(a.status == "running" and a.position not in done
               for a in await app.store.attempt_list(run_id)):
            return
        await asyncio.sleep(0.02)


async def _story(db: str, env: dict[str, str], model: _Model,
                 server: ScriptedLLMServer | None, spawn: Any, log_path: str,
                 folder: str, screen: _Screen) -> int:
    from tether.demo import research

    app: App = research.app
    app.use_store(db)
    printer = _Printer(screen)
    first = spawn()
    async with app:
        handle = await app.start(research.researcher.name, TASK, run_id=RUN_ID)
        print()
        screen.say(f"started run {RUN_ID} (agent {research.researcher.name!r}) on worker "
                   f"pid {first.pid}")
        screen.say(TASK, "task: ")
        print()
        deadline = time.monotonic() + TIMEOUT
        while printer.show(await app.get_run(RUN_ID), first.pid) < KILL_AFTER:
            if first.poll() is not None:
                print(f"worker {first.pid} exited (code {first.returncode}); see {folder}")
                return 1
            if time.monotonic() > deadline:
                print(f"timed out waiting for step {KILL_AFTER}; worker logs in {folder}")
                return 1
            await asyncio.sleep(0.05)
        await _until_attempt_running(app, RUN_ID, timeout=3.0)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        requests_at_kill = len(server.requests) if server is not None else 0
        running = [what.split(" ")[0] for pid, what in _executions(log_path)
                   if pid == first.pid]
        doing = (f"; it was running step {KILL_AFTER + 1} ({running[-1]})" if running
                 else "")
        print()
        screen.say(f"kill -9 worker {first.pid} after step {KILL_AFTER} (as a node restart "
                   f"would){doing}", ">>> ")
        print()
        resumed_at = time.monotonic()
        second = spawn()
        screen.say(f"started a new worker pid {second.pid}: it replays steps 1-{KILL_AFTER} "
                   f"from the journal and continues at step {KILL_AFTER + 1}")
        approvals = 0
        while True:
            info = await app.get_run(RUN_ID)
            printer.show(info, second.pid)
            if info.status.is_settled:
                break
            if time.monotonic() > deadline:
                print(f"timed out; worker logs in {folder}")
                return 1
            if await _answer_approval(app, env, screen):
                approvals += 1
            await asyncio.sleep(0.05)
        printer.show(info, second.pid)
        elapsed = time.monotonic() - resumed_at
        try:
            answer = await handle.result(timeout=5)
        except Exception as exc:
            print(f"\nthe run ended {info.status.value}: {exc}")
            return 1
    print()
    screen.say(str(answer), "answer: ")
    print(f"\n$ tether show {RUN_ID}")
    shown = await asyncio.to_thread(_tether, "show", RUN_ID, env=env, columns=screen.width)
    print((shown.stdout or shown.stderr).rstrip())
    status = _summary(info, model, server, requests_at_kill, first_pid=first.pid,
                      second_pid=second.pid, log_path=log_path, approvals=approvals,
                      elapsed=elapsed, screen=screen)
    # The store stays (a temporary folder): what a new user would open next.
    tether = _tether_command()
    print()
    screen.say(f"{tether} show {RUN_ID} --db {db}", "look around:  ")
    screen.say(f"{tether} serve --db {db}   (the web UI, http://127.0.0.1:8233)",
               "              ")
    return status


def _tether_command() -> str:
    """How to run ``tether`` from here: the command this interpreter's environment
    installed (``.venv/bin/tether`` after ``./scripts/demo.sh``, relative to the current
    folder when it is below it), else ``tether`` on the PATH, else ``python -m tether``."""
    beside = os.path.join(os.path.dirname(sys.executable), "tether")
    if os.path.exists(beside):
        rel = os.path.relpath(beside)
        return rel if not rel.startswith("..") else beside
    return "tether" if shutil.which("tether") else f"{sys.executable} -m tether"


async def _answer_approval(app: App, env: dict[str, str], screen: _Screen) -> bool:
    """If the run waits for an approval: show ``tether approvals`` and answer with
    ``tether approve`` (subprocesses, as a human at a terminal)."""
    from tether.ai import pending_approvals

    pending = [p for p in await pending_approvals(app) if p.run_id == RUN_ID]
    if not pending:
        return False
    p = pending[0]
    print()
    screen.say(f"the agent waits (released: no worker holds it) for approval of "
               f"{p.tool}({_args(p.arguments)})", ">>> ")
    screen.say(p.reason, "    reason: ")
    # Its lines indented under the command, on a terminal 2 columns narrower.
    listed = await asyncio.to_thread(_tether, "approvals", env=env,
                                     columns=screen.width and screen.width - 2)
    print("$ tether approvals\n" + "\n".join("  " + line
                                           for line in listed.stdout.rstrip().splitlines()))
    note = "within this quarter's budget"
    done = await asyncio.to_thread(_tether, "approve", RUN_ID, "--note", note, env=env)
    print(f'$ tether approve {RUN_ID} --note "{note}"')  # a command the shell takes as is
    screen.say((done.stdout or done.stderr).strip(), "  ")
    print()
    return done.returncode == 0


def _summary(info: Any, model: _Model, server: ScriptedLLMServer | None,
             requests_at_kill: int, *, first_pid: int, second_pid: int, log_path: str,
             approvals: int, elapsed: float, screen: _Screen) -> int:
    m = info.metrics
    print()
    screen.say(f"{int(m.get('tokens.input', 0)):,} input + {int(m.get('tokens.output', 0)):,} "
               f"output tokens in {int(m.get('llm.calls', 0))} model calls, "
               f"${m.get('cost.usd', 0.0):.6f}", "spent:            ")
    screen.say(f"{int(m.get('saved.tokens.input', 0)):,} input + "
               f"{int(m.get('saved.tokens.output', 0)):,} output tokens, "
               f"${m.get('saved.cost.usd', 0.0):.6f} ({int(m.get('saved.calls', 0))} recorded "
               "replies returned from the journal instead of asking the model again, after "
               "the kill and after the approval wait)", "saved by replay:  ")
    ran = _executions(log_path)
    for pid, label in ((first_pid, "killed worker"), (second_pid, "new worker")):
        mine = [what.split(" ")[0] for p, what in ran if p == pid]
        screen.say(f"{', '.join(mine) or 'none'}", f"python tools run by the {label} {pid}: ")
    killed = {what.split(" ")[0] for p, what in ran if p == first_pid}
    again = sorted(killed & {what.split(" ")[0] for p, what in ran if p == second_pid})
    if again:  # (what the journal had recorded did not run again)
        screen.say(f"{', '.join(again)} ran on both: the kill cut it before its result was "
                   "journaled, so the new worker ran it again; the steps journaled before "
                   "the kill did not run again", "  ")
    mcp = [what for _, what in ran if what.startswith("mcp:")]
    screen.say(f"{len(mcp)} call(s) ({', '.join(mcp)})", "MCP server received: ")
    ok = info.status.value == "completed" and approvals >= (1 if model.scripted else 0)
    if server is not None:
        bodies = Counter(json.dumps(r.body, sort_keys=True) for r in server.requests)
        repeats = sum(n - 1 for n in bodies.values())
        screen.say(f"provider requests: {len(server.requests)} ({requests_at_kill} before "
                   f"the kill, {len(server.requests) - requests_at_kill} after); repeated: "
                   f"{repeats or 'none'}")
        ok = ok and repeats == 0
    else:
        screen.say(f"provider: {model.spec}; its request log is not visible from here: the "
                   "journal shows each model call once, and saved.calls counts the replies "
                   "replay did not ask for again")
    print(f"the run completed {elapsed:.1f} s after the new worker started")
    return 0 if ok else 1
