"""The garbage collector while workers run.

A worker holding many runs keeps thousands of live objects (coroutines, frames,
futures, journal entries) that survive collections, and creates short-lived ones at
every step. With Python's default thresholds (700, 10, 10) the collector ran ~200
young collections and ~20 middle ones per 1,000 runs of 10 steps, each scanning those
survivors: about a quarter of the event loop's CPU (``bench/stepcost.py --runs 1000``
prints it). While a worker runs, the first threshold is raised to ``YOUNG_THRESHOLD``:
10 young collections instead of ~200 for the same work, and the same cycles are still
freed, a little later.

Only Python's default setting is changed, so an application that set its own keeps it;
the default is back when the last worker of the process stops, unless the application
changed the setting meanwhile. ``Worker(tune_gc=False)`` leaves the collector alone.
"""

from __future__ import annotations

import gc

#: Python's default thresholds.
DEFAULT = (700, 10, 10)
#: Objects allocated (net) before a young collection while workers run.
YOUNG_THRESHOLD = 10_000

_tuned = 0  # workers running with the raised threshold


def worker_started() -> bool:
    """Raise the young threshold if the collector has Python's default setting (or one
    this module set). Returns whether this worker holds the tuning (pass it back to
    ``worker_stopped``)."""
    global _tuned
    current = gc.get_threshold()
    if _tuned == 0 and current != DEFAULT:
        return False
    if _tuned == 0:
        gc.set_threshold(YOUNG_THRESHOLD, *DEFAULT[1:])
    _tuned += 1
    return True


def worker_stopped() -> None:
    """A worker that holds the tuning stopped: the last one restores the default."""
    global _tuned
    _tuned = max(0, _tuned - 1)
    if _tuned == 0 and gc.get_threshold() == (YOUNG_THRESHOLD, *DEFAULT[1:]):
        gc.set_threshold(*DEFAULT)
