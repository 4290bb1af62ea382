"""``PrivateCluster``: the tests' private PostgreSQL servers."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import CHECKOUT_PATH
from tests.chaos.pgcluster import PrivateCluster


def test_clusters_made_at_once_in_two_processes_get_different_ports() -> None:
    """Each took the first port from 55433 that nothing listened on: two made in two
    processes before either started got the same one, and a test that keeps its
    cluster down a while (tests/mcp_server/test_stdio.py: 4 failures in 16 runs beside
    another copy) reached the other's server. Now a port is reserved until ``stop``."""
    here = PrivateCluster()
    try:
        there = subprocess.run(
            [sys.executable, "-c", "from tests.chaos.pgcluster import PrivateCluster; "
                                   "c = PrivateCluster(); print(c.port); c.stop()"],
            env={**os.environ, "PYTHONPATH": CHECKOUT_PATH}, capture_output=True, text=True,
            timeout=60, check=True)
        assert int(there.stdout) != here.port
    finally:
        here.stop()
    again = PrivateCluster()  # (stop gave the port back)
    try:
        assert again.port == here.port
    finally:
        again.stop()
