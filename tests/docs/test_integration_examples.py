"""The complete examples of ``docs/integrations-pydantic-ai.md`` and
``docs/integrations-openai-agents.md`` as a new user runs them: the page's Python file
saved under the name it gives, its shell commands run in an empty folder (real
``tether worker`` processes, the real CLI, the SQLite file the page names), the
provider being the scripted server on loopback (``OPENAI_BASE_URL``). Each run the
page starts must complete with the answer the scripted model gave."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import forked
from tests.ai.test_mcp import stop_process
from tether.testing.llm_server import RecordedRequest, Reply
from tether.testing.responses_api import ScriptedResponsesServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def example(page: str) -> tuple[str, str, list[list[str]]]:
    """The page's first Python block (its file name and text) and the ``tether``
    commands of its first shell block, split as the shell would."""
    text = (ROOT / "docs" / page).read_text()
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    name = re.match(r"# (\w+\.py)\n", code)
    assert name, f"{page}: the example does not say its file name"
    shell = re.findall(r"```bash\n(.*?)```", text, flags=re.S)[0]
    commands = [shlex.split(line.split("#")[0].rstrip(" &"))
                for line in shell.splitlines() if line.startswith("tether ")]
    return name.group(1), code, commands


def tool_output_given(body: dict[str, Any]) -> bool:
    return any(isinstance(item, dict) and item.get("type") == "function_call_output"
               for item in body.get("input") or [])


def tool_names(body: dict[str, Any]) -> set[str]:
    return {t.get("name") for t in body.get("tools") or []}


def geography(request: RecordedRequest) -> Reply:
    """pydantic-ai's geography agent: the population tool, then the typed answer."""
    if not tool_output_given(request.body):
        return Reply(tool_calls=[{"name": "population",
                                  "arguments": {"city": "Mexico City"}}])
    return Reply(tool_calls=[{"name": "final_result", "arguments": {
        "city": "Mexico City", "country": "Mexico", "population_millions": 9.2}}])


def weather(request: RecordedRequest) -> Reply:
    """The Agents SDK page: the haiku agent answers; the weather agent calls its
    workflow tool, then answers."""
    if "get_weather" not in tool_names(request.body):
        return Reply("Functions call themselves")
    if not tool_output_given(request.body):
        return Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Tokyo"}}])
    return Reply("Sunny with wind: bike.")


CASES: dict[str, tuple[str, Callable[[RecordedRequest], Reply], dict[str, Any]]] = {
    "integrations-pydantic-ai.md": ("pydantic_ai", geography, {
        "geography": {"city": "Mexico City", "country": "Mexico",
                      "population_millions": 9.2},
        "capital_report": "Mexico City (9.2 M people)"}),
    "integrations-openai-agents.md": ("agents", weather, {
        "haiku": "Functions call themselves",
        "trip_advice": "Sunny with wind: bike."}),
}


@pytest.mark.parametrize("page", sorted(CASES))
async def test_the_complete_example_runs_as_written(page: str, tmp_path: Path) -> None:
    package, responder, answers = CASES[page]
    pytest.importorskip(package)
    name, code, commands = example(page)
    (tmp_path / name).write_text(code)
    workers = [c for c in commands if c[1] == "worker"]
    starts = [c for c in commands if c[1] == "start"]
    assert workers and [c[2] for c in starts] == list(answers)
    procs: list[subprocess.Popen[bytes]] = []
    async with ScriptedResponsesServer(responder=responder) as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.base_url,
               "OPENAI_API_KEY": "test-key", "OPENAI_AGENTS_DISABLE_TRACING": "1",
               "PYTHONPATH": str(ROOT / "src")}
        env.pop("TETHER_DATABASE_URL", None)

        async def tether(args: list[str]) -> subprocess.CompletedProcess[str]:
            # In a thread: the scripted server answers on this event loop meanwhile.
            return await asyncio.to_thread(
                forked.run, [sys.executable, "-m", "tether", *args], cwd=tmp_path,
                env=env, capture_output=True, text=True, timeout=120)

        try:
            for i, command in enumerate(workers):
                with open(tmp_path / f"worker-{i}.log", "wb") as log:
                    procs.append(forked.Popen([sys.executable, "-m", *command],
                                              cwd=tmp_path, env=env, stdout=log,
                                              stderr=subprocess.STDOUT))
            for command in starts:
                db = command[command.index("--db") + 1]
                run_id = f"{command[2]}-1"
                started = await tether([*command[1:], "--id", run_id])
                assert started.returncode == 0, started.stderr
                out = await tether(["result", run_id, "--wait", "90", "--db", db])
                logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
                assert out.returncode == 0, out.stderr + logs[-3000:]
                assert json.loads(out.stdout) == answers[command[2]]
                shown = await tether(["show", run_id, "--db", db])
                assert shown.returncode == 0 and "LLM spent" in shown.stdout, shown.stdout
        finally:
            for proc in procs:
                stop_process(proc)
