"""How the server draws the UI's times: in UTC, in a ``<time datetime>`` (app.js shows
them in the viewer's zone: tests/web/test_browser_times.py)."""

from __future__ import annotations

import datetime as dt

from tether.serve._ui import _ENV


def _render(source: str, now: float, **values: object) -> str:
    return _ENV.from_string(source).render(now=now, **values)


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_an_absolute_time_is_utc_text_in_a_time_element() -> None:
    ts = _ts("2026-12-06 13:53:12.75")
    assert _render("{{ t|when }}", ts, t=ts) == (
        '<time datetime="2026-12-06T13:53:12Z" title="2026-12-06 13:53:12 UTC">'
        "2026-12-06 13:53:12 UTC</time>")
    # (a relative time holds it in its attributes: app.js writes its title)
    assert _render("<span{{ t|at('since ') }}>", ts, t=ts) == (
        '<span title="since 2026-12-06 13:53:12 UTC" data-at="2026-12-06T13:53:12Z" '
        'data-say="since ">')
    # A time no date stands for is text, without a datetime that would not be one.
    assert _render("{{ t|when }}", ts, t=1e15) == "after 9999-12-31"
    assert _render("<span{{ t|at }}>", ts, t=1e15) == '<span title="after 9999-12-31">'
    assert _render("{{ t|when }}", ts, t=None) == "-"


def test_a_timer_wait_in_the_head_is_a_time() -> None:
    ts = _ts("2026-12-06 13:53:12")
    assert _render("{{ w|wait_text }}", ts, w="timer until 2026-12-06T17:36:08+00:00") == (
        'timer until <time datetime="2026-12-06T17:36:08Z" title="2026-12-06 17:36:08 UTC">'
        "2026-12-06 17:36:08 UTC</time>")
    # (a signal's name, a child run's id, kept whole on a line: app.css's .id)
    assert _render("{{ w|wait_text }}", ts, w="signal <go>") == (
        'signal <span class="id">&lt;go&gt;</span>')


def test_a_notes_time_of_day_has_its_date() -> None:
    """A form's note says a time of day ("at 23:59:50 UTC"), written a moment before the
    page: its date is the page's, or the day before when that time is ahead (the note
    written before midnight, the page drawn after)."""
    note = "Asked run <r> to cancel at 23:59:50 UTC: it stops at its next operation."
    before = _render("{{ f|flash }}", _ts("2026-12-06 23:59:55"), f=note)
    after = _render("{{ f|flash }}", _ts("2026-12-07 00:00:20"), f=note)
    tag = ('<time datetime="2026-12-06T23:59:50Z" title="2026-12-06 23:59:50 UTC" '
           'data-clock>23:59:50 UTC</time>')
    expected = f"Asked run &lt;r&gt; to cancel at {tag}: it stops at its next operation."
    assert before == after == expected
    assert _render("{{ f|flash }}", 0.0, f="Run <b> is cancelled.") == (
        "Run &lt;b&gt; is cancelled.")


def test_a_notes_ids_are_drawn_whole() -> None:
    """The ids a form's note names (marked by its writer, ``mark_id``) are each in a
    ``<span class="id">`` wherever they occur in it, quoted in a warning too, with the
    punctuation stuck to them (a line broke between the id and its full stop); an id
    inside a longer word, and the other words, are not."""
    from tether.serve._ui import mark_id

    note = (f"Forked {mark_id('pf')} at position 0 as {mark_id('pf-2')}. Note: run 'pf' "
            "ran under code version 'v1'; its fork 'pf-2', made by pfx, has none.")
    assert _render("{{ f|flash }}", 0.0, f=note) == (
        'Forked <span class="id">pf</span> at position 0 as <span class="id">pf-2.</span>'
        ' Note: run <span class="id">&#39;pf&#39;</span> ran under code version &#39;v1&#39;;'
        ' its fork <span class="id">&#39;pf-2&#39;,</span> made by pfx, has none.')
    # (an id cut by the cookie's 500 characters, its end marker lost, is plain text)
    assert _render("{{ f|flash }}", 0.0, f=f"Run {mark_id('a-b')[:-1]}") == "Run a-b"
