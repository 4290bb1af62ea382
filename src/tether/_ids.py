"""Run ids Tether makes up when the caller gives none.

A new id is a UUID version 7 (RFC 9562) as 32 lowercase hex digits, the shape run ids
always had: a 48-bit Unix time in milliseconds, then 74 random bits (from
``os.urandom``, so an id cannot be guessed: an MCP task id is a run id). The clock comes
first so that runs started close together get neighbouring ids. Every table keyed by run
id (runs, journal, run events, on both stores) then receives a new run's rows at the
right edge of its B-tree, in pages that fill up, instead of in the middle of full pages
that split; ``docs/performance-log.md`` has what that saves. Ids are ordered by time only
roughly (the random part orders those of one millisecond, and clocks step back);
nothing may rely on their order.
"""

from __future__ import annotations

import os
import time

_RAND_B = (1 << 62) - 1
_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62


def new_run_id() -> str:
    """A new run id: a UUIDv7 as 32 hex digits, time first."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))  # 80 bits: 12 for rand_a, 62 for rand_b
    value = ((ms & 0xFFFF_FFFF_FFFF) << 80 | _VERSION | (rand >> 68) << 64 | _VARIANT
             | rand & _RAND_B)
    return f"{value:032x}"
