"""What an answer to an approval the run does not wait for is told (``tether serve``'s
``POST /api/v1/runs/{id}/approval`` and ``tether approve``, with an ``approval_id``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.errors import RunNotFound, shown

if TYPE_CHECKING:
    from tether._app import App
    from tether.ai import NoPendingApproval

__all__ = ["refusal"]


async def refusal(app: App, run_id: str, approval_id: str | None,
                  error: NoPendingApproval) -> str:
    """The message of ``error`` (``tether.ai.approve`` refused the answer), except for an
    ``approval_id`` the run never had while it waits for another approval: that one is
    not pending, and the message names the one that is. ``approve`` says "approval ID
    was answered already" of any id the run does not wait for, true of the one a person
    was shown and someone else answered (the run's journal holds its answer), not of an
    id the run never had, of which the API and ``tether approve`` said it too (until
    2026-12-06). Two more reads, on refusals with an ``approval_id`` only."""
    if approval_id is None:
        return str(error)
    from tether.ai import APPROVAL_SIGNAL, pending_approval

    try:
        pending = await pending_approval(app, run_id)
        info = await app.get_run(run_id)
    except RunNotFound:
        return str(error)
    if pending is None or pending.approval_id == approval_id:
        return str(error)  # (it waits for none, or this one was answered meanwhile)
    journals = [info.journal, *(g["journal"] for g in info.history)]
    for entry in (e for journal in journals for e in journal):
        result = entry.get("result")
        if entry.get("name") == APPROVAL_SIGNAL and isinstance(result, dict) \
                and str(result.get("approval_id")) == approval_id:
            return str(error)  # answered already, as it says
    if _later(approval_id, pending.approval_id):
        return (f"run {shown(run_id)} has no pending approval {shown(approval_id)}: it has "
                f"not asked for it yet; it waits for approval {pending.approval_id} "
                f"({pending.tool}) now, which this answer was not meant for; nothing was "
                "sent (answer it once the run asks for it)")
    return (f"run {shown(run_id)} has no pending approval {shown(approval_id)}: it never "
            f"asked for one with that id; it waits for approval {pending.approval_id} "
            f"({pending.tool}), which this answer was not meant for; nothing was sent")


def _later(approval_id: str, pending: str) -> bool:
    """Whether ``approval_id`` comes after ``pending`` in a run's progress: both are
    ``tether.ai.Agent``'s ``TURN.CALL`` ids (numbers compared in order: ``1.1`` after
    ``1.0``, ``2.0`` after ``1.9``). (Of such an id, answered before the run asked for
    it, "it never asked for one with that id" was said, as of an id it will never
    have, until 2026-12-08.)"""
    def order(text: str) -> tuple[int, ...] | None:
        parts = text.split(".")
        return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None

    mine, theirs = order(approval_id.strip()), order(pending)
    return mine is not None and theirs is not None and len(mine) == len(theirs) \
        and mine > theirs
