"""``tests.web.webapp``'s workflows in a worker that writes its attempt history only when
a run ends (``tether worker tests.web.webapp_unwritten:app``): a step in flight stays
unknown to the store, as it is for its first 50 ms in a worker as shipped."""

from __future__ import annotations

from tests.web.webapp import app
from tether import _replay

_replay.ATTEMPT_WRITE_DELAY = 3600.0

__all__ = ["app"]
