"""Tether's tests."""

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]

#: PYTHONPATH for a test's subprocesses: this checkout's code (``src/`` first, before
#: whichever Tether the interpreter has installed) and its ``tests`` package. With the
#: checkout's root alone, a test run from another clone had its workers import the
#: installed (editable) Tether: another checkout's code.
CHECKOUT_PATH = os.pathsep.join((str(_CHECKOUT / "src"), str(_CHECKOUT)))
