"""A blocked run waits for nothing until an operator resumes it (docs/concepts.md): a
timed wait it had begun (a signal wait with a timeout, a timer) stays pending in its
journal, its deadline kept, but no worker takes the run for it. ``tether show`` and the
run page say so: the entry is *on hold while the run is blocked*, its deadline what
comes once resumed. Until 2026-12-07 the page drew it as a ``waiting`` row, its
duration ticking, and ``tether show`` as a plain ``until ...``. The journal and the
document (``--json``, the API) are unchanged: the entry is ``pending``."""

from __future__ import annotations

import io
import re

import httpx

from tests.web.helpers import ADMIN, READ, blocked_in_a_timed_wait
from tether import App

READ_HEADERS = {"Authorization": f"Bearer {READ}"}
HELD_NOTE = "on hold while the run is blocked"


async def test_a_blocked_runs_pending_timed_wait_is_on_hold(store_url: str) -> None:
    from tether.cli._runs import print_timeline
    from tether.cli._show_fit import print_fitted
    from tether.serve import Tokens, create_app

    await blocked_in_a_timed_wait(store_url, "held-1")
    app = App(store_url)
    async with app:
        info = await app.get_run("held-1")
        assert info.status.value == "blocked"
        [wait] = [e for e in info.journal if e["kind"] == "signal"]
        assert wait["status"] == "pending" and wait["next_attempt_at"]  # (the deadline)

        for draw in (lambda out: print_timeline(info, out),
                     lambda out: print_fitted(info, 200, out.write)):
            out = io.StringIO()
            draw(out)
            [row] = [ln for ln in out.getvalue().splitlines()
                     if re.match(r"\s*1\s+signal\s", ln)]
            assert f"{HELD_NOTE}; once resumed: until " in row, row

        asgi = create_app(app, tokens=Tokens({ADMIN: "admin", READ: "read"}), mcp=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://127.0.0.1") as http:
            page = (await http.get("/runs/held-1", headers=READ_HEADERS)).text
            doc = (await http.get("/api/v1/runs/held-1", headers=READ_HEADERS)).json()
    [row] = re.findall(r'<tr class="op k-signal[^"]*">.*?</tr>', page, re.S)
    assert "st-on_hold" in row and " wait" not in row.split(">", 1)[0], row
    assert '<span class="pill o-on_hold">on hold</span>' in row
    assert "waiting" not in row and "data-ticking" not in row and "…" not in row
    assert f"{HELD_NOTE}; once resumed: until <time" in row
    # The document is the journal's: the entry is pending, as stored.
    [entry] = [e for e in doc["journal"] if e["kind"] == "signal"]
    assert entry["status"] == entry["outcome"] == "pending"
