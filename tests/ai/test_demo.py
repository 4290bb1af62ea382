"""The README's first command: ``tether demo`` end to end, as a subprocess (it starts
its own worker processes, kills one with SIGKILL, and approves through the CLI)."""

from __future__ import annotations

import os
import re
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
    assert "MCP server received: 1 call(s) (mcp:define 'durable execution' key=demo-1:2)" in out
    assert re.search(r"provider requests: 4 \(2 before the kill, 2 after\); repeated: none",
                     out)
    assert "status completed" in out
    # The kill lands in the middle of step 4 (search_web): the new worker's run of it is
    # its second attempt, and the tools' log shows both workers ran it.
    assert re.search(r"\n +4 +step +researcher\.tool:search_\S* +ok +2 ", out), out
    assert f"python tools run by the killed worker {killed.group(1)}: search_web" in out
    assert "answer: Recommendation: yes." in out
    saved = re.search(r"saved by replay:  (\d+) input \+ (\d+) output tokens, \$([0-9.]+) "
                      r"\((\d+) recorded replies", out)
    assert saved is not None
    # Steps 1 and 3 replayed after the kill, step 5 after the approval wait.
    assert (saved.group(1), saved.group(2), saved.group(4)) == ("1775", "131", "3")
    assert float(saved.group(3)) > 0
