"""One rule for "how long ago" (``tether._clock.age``): ``tether workers``, ``tether
approvals``' WAITING, the web UI's "... ago" as the server draws it and as its script
redraws it (``fmtAgo``, run by Node) read an age alike at each threshold. Past 48 hours
``tether approvals`` said ``52.0 h`` where ``tether workers`` said ``2.2 d``; under 2
minutes the UI said ``2 min ago`` where both said ``90 s``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources

import pytest

from tests.cli.test_workers_table import AGES
from tether.cli._approvals import _ago
from tether.cli._workers import ago
from tether.serve._ui import _ENV

NOW = 1_765_000_000.0


@pytest.mark.parametrize(("seconds", "shown"), AGES)
def test_every_age_reads_alike_in_the_cli_and_the_server_drawn_page(
        seconds: float, shown: str) -> None:
    drawn = _ENV.from_string("{{ t|ago }}").render(now=NOW, t=NOW - seconds)
    assert (ago(seconds), _ago(seconds), drawn) == (shown, shown, f"{shown} ago")


def test_the_page_script_redraws_each_age_as_the_server_drew_it() -> None:
    """app.js's ``fmtAgo`` (called with the age held at 0 and above, as its ``tick``
    calls it), run by Node on every age of the table."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to run app.js's fmtAgo")
    script = (resources.files("tether.serve") / "static" / "app.js").read_text()
    found = re.search(r"^function fmtAgo\(s\) \{.*?^\}", script, re.M | re.S)
    assert found, "app.js has no function fmtAgo"
    ages = [max(seconds, 0.0) for seconds, _ in AGES]
    program = f"{found.group(0)}\nconsole.log(JSON.stringify({json.dumps(ages)}.map(fmtAgo)));"
    out = subprocess.run([node, "-e", program], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert json.loads(out) == [f"{shown} ago" for _, shown in AGES]
