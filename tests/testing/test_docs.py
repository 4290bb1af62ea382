"""Every example of ``docs/testing.md`` is a complete test file: write each one out and
run it with pytest in a subprocess, as a user would."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests import forked

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"


def examples(lang: str = "python") -> dict[str, str]:
    found = {}
    for block in re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S):
        first = block.splitlines()[0]
        if first.startswith("# file: "):
            found[first[len("# file: "):].strip()] = block
    return found


def test_the_doc_has_its_examples() -> None:
    assert set(examples()) >= {"test_order.py", "test_approval.py", "test_agent.py",
                               "test_mcp_tools.py", "test_fixtures.py",
                               "test_golden_histories.py", "test_framework_agents.py",
                               "test_payment_mock.py"}
    assert set(examples("ini")) == {"pytest.ini"}


@pytest.mark.slow
def test_every_example_passes(tmp_path: Path) -> None:
    for name, code in examples().items():
        (tmp_path / name).write_text(code)
    # The doc's own pytest.ini, as a user copies it: its settings are what the examples
    # run with, and pytest-asyncio must not warn of a setting it lacks.
    (tmp_path / "pytest.ini").write_text(examples("ini")["pytest.ini"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("TETHER_DATABASE_URL", None)
    out = forked.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "12 passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-2000:]
    assert "asyncio_default_fixture_loop_scope" not in out.stdout + out.stderr, out.stdout


SHOP = '''
import os

import tether
from tether import App

app = App()
AUDIT = os.environ.get("SHOP_AUDIT") != "0"   # the new code audits; the old did not


@app.step
def record(what: str, order: str) -> str:
    return f"{what} {order}"


@app.step
def audit(order: str) -> str:
    return f"audited {order}"


@app.workflow
async def checkout(order: str) -> str:
    for what in ("reserve", "price", "tax"):
        await record(what, order)
    if AUDIT:
        await audit(order)
    await tether.sleep(60)
    for what in ("pack", "label"):
        await record(what, order)
    await tether.wait_for_signal("approve")
    return order
'''


async def test_the_replay_check_prints_what_the_page_shows(tmp_path: Path) -> None:
    """The page's ``tether replay --check`` lines, for the two runs it describes: one
    recorded by the new code (waiting for its approval), one by the code before a step
    was added (asleep): the first replays, the second stops where the step was added,
    and the counts go to stderr."""
    import importlib.util
    import json

    from tether.testing import TestEnv, export_history

    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "workflows.py").write_text(SHOP)
    spec = importlib.util.spec_from_file_location("docs_shop", tmp_path / "shop" /
                                                  "workflows.py")
    assert spec and spec.loader
    shop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shop)
    (tmp_path / "runs").mkdir()
    async with TestEnv(shop.app) as env:
        for run_id, audited, name in (("3f2a9c", True, "checkout-3f2a"),
                                      ("81bd07", False, "checkout-81bd")):
            shop.AUDIT = audited
            await env.start(shop.checkout, "o-1", run_id=run_id)
            if audited:  # past its sleep, to its approval; the other one sleeps
                await env.advance(60)
            await env.settle()
            history = await export_history(env.app, run_id)
            (tmp_path / "runs" / f"{name}.json").write_text(json.dumps(history))
    env_vars = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env_vars["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(tmp_path)])
    out = forked.run([sys.executable, "-m", "tether", "replay", "--check",
                      "shop.workflows:app", "runs/checkout-3f2a.json",
                      "runs/checkout-81bd.json"], cwd=tmp_path, env=env_vars,
                     capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    text = DOC.read_text()
    found = re.search(r"<!-- example: testing-replay-output -->\n```\n(.*?)```", text, re.S)
    assert found, "the page no longer marks its replay output"
    *verdicts, counts = found.group(1).replace("…", "").splitlines()
    assert out.stdout.splitlines() == verdicts
    assert out.stderr.strip() == counts
