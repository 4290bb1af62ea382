"""The independent model: what every chaos run must return and which step effects it
must have caused, computed from the seeds alone (no store, no engine)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.chaos.chaos_app import SIGNALS, branch_args, plan, value


@dataclass(frozen=True)
class Expected:
    result: list[int]
    effects: frozenset[str]  # step keys: "<run id>:<position>"
    waits_for_signal: bool
    positions: int  # journal entries of the run itself


def signal_payload(seed: int) -> int:
    return seed % 9973


def expected(run_id: str, seed: int) -> Expected:
    """Positions as the engine gives them: one per operation, two for ``tether.call``
    (the child's start, then its result), four for a gather (its branches' steps, or
    three steps and the signal's wait)."""
    result: list[int] = []
    effects: set[str] = set()
    pos = 0
    for kind, arg in plan(seed):
        if kind == "step":
            result.append(value(seed, arg))
            effects.add(f"{run_id}:{pos}")
        elif kind == "child":
            result.append((value(seed + 1, arg) + value(seed + 2, arg)) % 1_000_003)
            child_id = f"{run_id}.{pos}"
            effects.update({f"{child_id}:0", f"{child_id}:1"})  # its two steps
            pos += 1
        elif kind == "signal":
            result.append(signal_payload(seed))
        elif kind == "gather":
            # Two branches of two steps: four positions, taken in the order the steps
            # complete (which branch gets which one varies; the set does not).
            for b in (0, 1):
                first, second = branch_args(arg, b)
                result.append((value(seed, first) + value(seed, second)) % 1_000_003)
            effects.update(f"{run_id}:{pos + k}" for k in range(4))
            pos += 3
        elif kind == "gsignal":
            # The gather starts its branches in order: the first branch's first step
            # takes the first position, the signal wait the second; the first branch's
            # second step and the step after the signal take the next two, in the order
            # they are called (both are steps: the set is the same either way).
            first, second = branch_args(arg, 0)
            result.append((value(seed, first) + value(seed, second)) % 1_000_003)
            result.append((signal_payload(seed) + value(seed, branch_args(arg, 1)[0]))
                          % 1_000_003)
            effects.update(f"{run_id}:{pos + k}" for k in (0, 2, 3))
            pos += 3
        pos += 1
    return Expected(result, frozenset(effects), any(k in SIGNALS for k, _ in plan(seed)),
                    pos)
