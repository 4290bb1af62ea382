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
