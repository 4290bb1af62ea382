"""What ``tether show`` prints about a run's life: its version, where a fork came from,
earlier generations (continue-as-new) and every execution attempt of its steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether._types import RunInfo
from tether.cli._common import fmt_duration, fmt_time, short


def _outcome(e: dict[str, Any]) -> str:
    err = e.get("error")
    if isinstance(err, dict):
        return f"{err.get('type', 'Error')}: {err.get('message', '')}"
    if err is not None:
        return str(err)
    return short(e["result"]) if e.get("result") is not None else ""


def print_origin(info: RunInfo, w: Callable[[str], Any]) -> None:
    if info.version:
        w(f"version: {info.version}\n")
    if info.forked_from:
        w(f"forked from run {info.forked_from} at position {info.forked_at} (positions "
          f"0..{(info.forked_at or 0) - 1} copied from it)\n")
    if info.erased_at:
        w(f"payloads erased {fmt_time(info.erased_at)}\n")
    for g in info.history:
        w(f"\ngeneration {g['generation']} (continued as new)  input: "
          f"{short(g['input'], 80)}\n")
        for e in g["journal"]:
            w(f"{e['position']:>4}  {e['kind']:12} {short(e['name'], 24):24} "
              f"{e['status']:8} {e['attempts']:>3}  {fmt_duration(e['duration']):>9}  "
              f"{short(_outcome(e), 70)}\n")
    if info.history:
        w(f"\ngeneration {info.generation} (current)\n")


def print_attempts(info: RunInfo, w: Callable[[str], Any]) -> None:
    """Attempts worth a look: any step that took more than one, or one that failed or was
    cut off (a run whose every step succeeded at once prints nothing here)."""
    by_step: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for a in info.attempts:
        by_step.setdefault((a["generation"], a["position"]), []).append(a)
    shown = [a for group in by_step.values()
             if len(group) > 1 or any(a["status"] != "ok" for a in group) for a in group]
    if not shown:
        return
    w("\nattempts:\n")
    for a in shown:
        took = (a["finished_at"] - a["started_at"]) if a["finished_at"] else None
        w(f"{a['position']:>4}  {short(a['name'], 24):24} #{a['attempt']:<3} "
          f"{a['status']:12} {fmt_duration(took):>9}  worker {a['worker_id']}"
          + (f"  {short(_outcome(a), 60)}" if a.get("error") is not None else "") + "\n")
