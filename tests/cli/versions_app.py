"""An app whose code version is ``$TETHER_TEST_VERSION`` (``tests.cli.versions_app:app``):
the workers of ``tether versions``' tests, one process per version."""

from __future__ import annotations

import os

import tether

app = tether.App(version=os.environ["TETHER_TEST_VERSION"])


@app.workflow(name="nightly")
async def nightly() -> int:
    return 1
