"""The README's first command: ``tether demo`` end to end, as a subprocess (it starts
its own worker processes, kills one with SIGKILL, and approves through the CLI)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.faults
def test_demo_survives_kill_and_approval_without_repeated_requests() -> None:
    """The run completes after the kill and the CLI approval, the provider saw no
    repeated request, and replay saved the recorded replies."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TETHER_DATABASE_URL")}
    done = subprocess.run([sys.executable, "-m", "tether", "demo", "--scripted"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "the local scripted model server at http://127.0.0.1:" in out
    killed = re.search(r">>> kill -9 worker (\d+) after step 3", out)
    resumed = re.search(r"started a new worker pid (\d+)", out)
    assert killed and resumed and killed.group(1) != resumed.group(1)
    assert "the agent waits (released: no worker holds it) for approval of buy_report" in out
    assert "$ tether approve demo-1" in out and "demo-1: approved buy_report" in out
    # The command it shows runs as shown when pasted into a shell: the one it ran.
    shown = re.search(r"^\$ (tether approve .*)$", out, re.M)
    assert shown and shlex.split(shown.group(1)) == [
        "tether", "approve", "demo-1", "--note", "within this quarter's budget"]
    assert "MCP server received: 1 call(s) (mcp:define 'durable execution' key=demo-1:2)" in out
    assert re.search(r"provider requests: 4 \(2 before the kill, 2 after\); repeated: none",
                     out)
    assert "status completed" in out
    # The kill lands in the middle of step 4 (search_web): the new worker's run of it is
    # its second attempt, and the tools' log shows both workers ran it.
    assert re.search(r"\n +4 +step +researcher\.tool:search_\S* +ok +2 ", out), out
    assert f"python tools run by the killed worker {killed.group(1)}: search_web" in out
    assert "answer: Recommendation: yes." in out
    saved = re.search(r"saved by replay:  ([\d,]+) input \+ ([\d,]+) output tokens, \$([0-9.]+) "
                      r"\((\d+) recorded replies", out)
    assert saved is not None
    # Steps 1 and 3 replayed after the kill, step 5 after the approval wait.
    assert (saved.group(1), saved.group(2), saved.group(4)) == ("1,775", "131", "3")
    assert float(saved.group(3)) > 0


@pytest.mark.slow
@pytest.mark.faults
def test_demo_fits_an_80_column_terminal() -> None:
    """On a terminal the demo's lines, and the ``tether approvals`` and ``tether show``
    output it prints, fit its width (they ran on a terminal too: fitted); the story is
    all there once the lines are joined."""
    from tests.cli.test_fit import terminal_output

    out = terminal_output([sys.executable, "-m", "tether", "demo", "--scripted"], 80,
                          drop=("OPENAI_API_KEY", "ANTHROPIC_API_KEY"), cwd=str(ROOT))
    assert [line for line in out.splitlines() if len(line) > 80] == [], out
    text = " ".join(out.split())
    assert re.search(r">>> kill -9 worker \d+ after step 3 \(as a node restart would\); it "
                     r"was running step 4 \(search_web\)", text), out
    assert re.search(r"started a new worker pid \d+: it replays steps 1-3 from the journal "
                     r"and continues at step 4", text), out
    assert "for approval of buy_report(title='Durable agents 2025', price_usd=49.0)" in text
    # tether approvals: its arguments whole, on a line of their own (indented under the
    # command); tether show: each result on a line under its entry.
    assert '\n    arguments: {"title": "Durable agents 2025", "price_usd": 49.0}\n' in out
    assert "demo-1: approved buy_report" in text
    assert "\n     → RESULT / ERROR\n" in out
    assert "search_web ran on both: the kill cut it before its result was journaled" in text
    assert re.search(r"saved by replay: 1,775 input \+ 131 output tokens, \$[0-9.]+ \(3 "
                     r"recorded replies", text), out
    assert "provider requests: 4 (2 before the kill, 2 after); repeated: none" in text
    assert "answer: Recommendation: yes." in text


#: A process without the given top-level modules (as an install without the extras
#: that provide them), then ``tether demo``.
WITHOUT = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, Missing())
from tether.cli import main
sys.exit(main(["demo", "--scripted"]))
"""


@pytest.mark.parametrize("hidden, needle", [
    ({"mcp"}, "tether demo needs the mcp extra: pip install 'tether[llm,mcp]'"),
    ({"httpx2", "mcp"}, "tether demo needs the llm and mcp extras"),
])
def test_demo_without_its_extras_says_what_to_install(hidden: set[str], needle: str) -> None:
    """``tether demo`` in an install without the ``mcp`` extra started its model server,
    then failed with a traceback (the ImportError of ``tether.ai.mcp``); now it says
    which extras it needs, in one line, before starting anything."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TETHER_DATABASE_URL")}
    done = subprocess.run([sys.executable, "-c", WITHOUT.format(hidden=sorted(hidden))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == "", done.stdout
    assert done.stderr.startswith(f"tether: error: {needle}"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
