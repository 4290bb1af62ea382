"""Shared pieces of the integrations' crash tests: ``tether worker`` subprocesses ended
by PID, a tool log, and the proof that no model request was sent twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests import forked
from tests.ai.test_mcp import stop_process
from tests.engine.helpers import wait_for
from tether import App
from tether.testing.llm_server import RecordedRequest

ROOT = Path(__file__).resolve().parents[2]


class Workers:
    """``tether worker APP`` subprocesses of one test, ended by PID."""

    def __init__(self, app: str, db: str, env: dict[str, str], log_dir: Path) -> None:
        self.app = app
        self.db = db
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"worker-{len(self.procs)}.log", "wb") as log:
            proc = forked.Popen(
                [sys.executable, "-m", "tether", "worker", self.app, "--db", self.db,
                 "--lease", "2"], cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            stop_process(proc)


def env_for(tmp: Path, llm_url: str) -> dict[str, str]:
    return {**os.environ, "AGENT_LLM_URL": llm_url, "AGENT_GATE": str(tmp / "gate"),
            "AGENT_TOOL_LOG": str(tmp / "tools.jsonl"), "PYTHONPATH": str(ROOT),
            "OPENAI_API_KEY": "test-key"}


def tool_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_no_request_twice(requests: list[RecordedRequest]) -> None:
    """Every request the model received is distinct (a resent request would repeat a
    body: the same conversation at the same point)."""
    bodies = [json.dumps(r.body, sort_keys=True) for r in requests]
    assert len(set(bodies)) == len(bodies), "the model received a request twice"


async def pending_after_paid(app: App, run_id: str, failures: int) -> dict[str, Any]:
    """Wait until the run's first step (an LLM call) waits for its next attempt after
    ``failures`` paid failed attempts, and the metrics those attempts added are stored
    (their tokens, as the ``failed_attempts`` its journaled error carries; some tokens,
    from a Tether that did not carry them); return the step's entry."""
    found: dict[str, Any] = {}

    async def pending() -> bool:
        info = await app.get_run(run_id)
        entry = info.journal[0] if info.journal else {}
        if entry.get("status") != "pending" or entry.get("attempts") != failures:
            return False
        paid = (entry["error"].get("attrs") or {}).get("failed_attempts", {}).get("tokens")
        told = info.metrics.get("tokens.input", 0) + info.metrics.get("tokens.output", 0)
        if not told or paid not in (None, told):
            return False
        found.update(entry)
        return True

    await wait_for(pending, timeout=30, interval=0.05,
                   what=f"the call waits after {failures} paid failed attempts")
    return found
