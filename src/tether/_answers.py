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
    return (f"run {shown(run_id)} has no pending approval {shown(approval_id)}: it never "
            f"asked for one with that id; it waits for approval {pending.approval_id} "
            f"({pending.tool}), which this answer was not meant for; nothing was sent")
