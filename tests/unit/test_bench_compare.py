"""``bench/compare`` as a user meets it: its command line, the table and JSON it builds
from the rounds, and what it leaves behind. No figure is measured here: the tool runs
with the smallest sizes, and only its parsing, arithmetic and cleanup are checked."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
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
