"""A run page's timeline on a touch screen (390 x 844, light and dark) in a real
headless Chromium: each entry reads as a block at the card's width, no row a blank
block; the fork link in view; a row a run event adds gets the same layout; a run link
in a sentence keeps its punctuation on its line. Screenshots go to the test's
temporary folder."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, PHONE, logged_in, phone_site, wait_for
from tests.web.test_browser import browser as browser  # the fixture
from tests.web.test_browser_phone_run_pages import SIDEWAYS

pytestmark = pytest.mark.slow

FAN = "fan-2026-12-07-0001"
FAILED = "order-2026-12-07-bb22"
RETRIED = "retry-2026-12-07-cc33"
LONG = "long-2026-12-07-ee55"
PARENT = "digest-2026-12-07-ef56"

#: Each timeline row shown (not folded): its text, its height, and the height of what
#: the reader sees of it: its content (text, badges, links, "details") inside the box
#: the timeline scrolls in, from the first line's top to the last one's bottom. A row
#: taller than that by more than its padding is a blank block: as a wide table on a
#: phone, the details column (off screen, a word wide) made rows hundreds of pixels
#: tall under "#, Kind, Name".
ROWS = """rows => rows.filter(row => row.getClientRects().length).map(row => {
  const view = row.closest('.scroll-x').getBoundingClientRect();
  let top = Infinity, bottom = -Infinity;
  for (const cell of row.cells) {
    const range = document.createRange();
    range.selectNodeContents(cell);
    for (const r of range.getClientRects()) {
      if (!r.width || !r.height || r.right <= view.left || r.left >= view.right) continue;
      top = Math.min(top, r.top);
      bottom = Math.max(bottom, r.bottom);
    }
  }
  return [row.textContent.trim().slice(0, 60), row.getBoundingClientRect().height,
          bottom - top];
})"""

#: The most a row is taller than what it shows: its padding and a cell's (8 + 8 px).
PADDING = 24

#: Whether an element is inside the box the timeline scrolls in, as the page opens (not
#: scrolled sideways to).
IN_VIEW = """e => { const r = e.getBoundingClientRect(),
  view = e.closest('.scroll-x').getBoundingClientRect();
  return r.width > 0 && r.left >= view.left && r.right <= view.right; }"""

#: Whether the character after a link is on the link's line (compared by the bottoms
#: of the two texts: a line apart when it went to the next; the link's box reaches
#: beyond its text on a touch screen).
PUNCTUATION_WITH_IT = """a => {
  const next = a.nextSibling;
  const range = document.createRange();
  range.setStart(next, 0);
  range.setEnd(next, 1);
  const text = document.createRange();
  text.selectNodeContents(a);
  const mark = range.getBoundingClientRect(), link = text.getBoundingClientRect();
  return [next.textContent[0], Math.abs(mark.bottom - link.bottom)
          < parseFloat(getComputedStyle(a).lineHeight) / 2];
}"""


def _rows_read_whole(page: object, where: str) -> None:
    """No timeline row on ``page`` is taller than what it shows plus its padding; the
    timeline fits its card (nothing to scroll to) and the page keeps its width."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    rows = page.locator(".timeline tr.op").evaluate_all(ROWS)
    blank = [(text, height, shown) for text, height, shown in rows
             if height > shown + PADDING]
    assert not blank, f"{where}: rows with a blank block: {blank}"
    assert page.locator(".scroll-x").first.evaluate(
        "e => e.scrollWidth <= e.clientWidth"), f"{where}: the timeline scrolls sideways"
    assert not page.evaluate(SIDEWAYS), f"{where}: the page scrolls sideways"


def test_the_timeline_on_a_phone(browser: object, tmp_path: Path) -> None:
    """At 390 px the timeline was a table 760 px wide in a box that scrolled: its
    details squeezed to a column off screen, a fan-out's row 500 px of stripes under
    "child_result 3 child runs". Each entry now reads at the card's width: position,
    kind, name and status, then start, duration and attempts, then its details."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    runs = [("fan_out_parent", FAN, [], "waiting"), ("fixable", FAILED, ["order-7"], "failed"),
            ("retrying", RETRIED, ["t1"], "completed"), ("steps", LONG, [55], "completed"),
            ("waiting_parent", PARENT, [], "waiting")]
    api = {"Authorization": f"Bearer {ADMIN}"}
    with phone_site(tmp_path, "timeline", runs) as site:
        url = site.url
        r = httpx.post(f"{url}/api/v1/runs/{PARENT}/cancel", headers=api, json={})
        assert r.status_code == 202, r.text
        wait_for(url, f"{PARENT}.0", "cancelled")
        for scheme in ("light", "dark"):
            with logged_in(browser, url, scheme=scheme) as page:
                for run_id in (FAN, FAILED, RETRIED, LONG):
                    page.goto(url + "/runs/" + run_id)
                    expect(page.locator("#run-status")).to_be_visible()
                    page.screenshot(path=str(tmp_path / f"{run_id}-390-{scheme}.png"),
                                    full_page=True)
                    _rows_read_whole(page, run_id)
                    if page.locator("#timeline-unfold").count():  # (LONG: its folded rows)
                        page.locator("#timeline-unfold").check()
                        _rows_read_whole(page, f"{run_id} unfolded")
                    if run_id != FAN:  # (a waiting run's journal is forked from its end)
                        fork = page.locator(".timeline tr.op:visible a.forkhere").first
                        expect(fork).to_be_visible()
                        assert fork.evaluate(IN_VIEW), f"{run_id}: the fork link is off screen"
                        assert fork.evaluate("e => e.getBoundingClientRect().height") >= 40
                page.goto(url + "/runs/" + FAILED)
                failed = page.locator("tr.op.st-error")
                expect(failed).to_contain_text("bug in fragile('order-7')")
                failed.locator("summary").click()
                expect(failed.locator("pre.tb")).to_be_visible()
                page.goto(url + "/runs/" + RETRIED)
                attempts = page.locator("tr.op.k-step td").nth(4)
                expect(attempts).to_have_text("2")
                assert attempts.evaluate(
                    "e => getComputedStyle(e, '::before').content") == '"attempts "'
                expect(attempts).to_be_visible()

        # A row a run event adds (the child .2 ends: its result is journaled) is drawn
        # as the others, and the page keeps its width.
        with logged_in(browser, url) as page:
            page.goto(url + "/runs/" + FAN)
            rows = page.locator(".timeline tr.op")
            expect(rows).to_have_count(5)  # (3 starts, the first child's result, the wait)
            r = httpx.post(f"{url}/api/v1/runs/{FAN}.2/signals/go", headers=api,
                           json={"data": 1})
            assert r.status_code in (200, 202), r.text
            expect(rows).to_have_count(6)
            names = page.locator(".timeline tr.op.k-child_result td:nth-child(3)")
            expect(names).to_contain_text([f"{FAN}.0", f"{FAN}.2", "3 child runs"])
            page.screenshot(path=str(tmp_path / "fan-live-390.png"), full_page=True)
            _rows_read_whole(page, "the fan-out after a child ended")

            # The cancelled child's "with its parent run <link>, whose cancel ...": the
            # comma on the link's line at every width (a line broke between the two
            # where the link ended a line: at 267 and 767 px, say).
            page.goto(url + f"/runs/{PARENT}.0")
            link = page.locator(".cancel-said a")
            expect(link).to_have_text(PARENT)
            for width in range(250, 800):  # (at 1 px steps: it broke in a few px at each)
                page.set_viewport_size({"width": width, "height": PHONE["height"]})
                mark, with_it = link.evaluate(PUNCTUATION_WITH_IT)
                assert mark == "," and with_it, f"at {width} px the comma left its link"


LONG_WAIT = "long-wait-2026-12-07-ff66"

#: The timeline's entries as a phone shows them: for each, its position, its status,
#: whether it is shown, and whether the server folds it (``tr.fold``).
ENTRIES = """() => [...document.querySelectorAll('.timeline tr.op')].map(row => [
  row.cells[0].firstChild ? row.cells[0].firstChild.textContent.trim() : '',
  row.querySelector('.pill').textContent.trim(), row.getClientRects().length > 0,
  row.classList.contains('fold')])"""

#: The lines that stand for folded entries: how many each says, whether shown.
GAPS = """() => [...document.querySelectorAll('.timeline tr.fold-gap')].map(row => [
  parseInt(row.textContent), row.getClientRects().length > 0])"""

#: How many of the newest entries a phone always shows (``_ui.FOLD_KEEP``).
NEWEST = 10


def _folded_as_said(page: object, where: str) -> int:
    """The timeline on ``page`` shows its newest ``NEWEST`` entries and every entry not
    ``ok``, and folds the others, each run of them behind a line saying how many; the
    box above it says so. Returns how many are folded."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    entries = page.evaluate(ENTRIES)
    hidden = [e for e in entries if not e[2]]
    assert hidden, f"{where}: nothing folded"
    assert all(e[3] and e[1] == "ok" for e in hidden), f"{where}: {hidden}"
    assert all(e[2] for e in entries[-NEWEST:]), f"{where}: a newest entry is folded"
    assert all(e[2] for e in entries if e[1] != "ok"), f"{where}: a failed one is folded"
    gaps = page.evaluate(GAPS)
    assert all(shown for _, shown in gaps) and sum(n for n, _ in gaps) == len(hidden), gaps
    assert page.locator(".unfold").text_content().split() == [
        "show", "all", str(len(entries)), "entries", f"({len(hidden)}", "folded)"]
    return len(hidden)


def test_a_long_timeline_folds_on_a_phone(browser: object, tmp_path: Path) -> None:
    """A run of 60 steps on a 390 px phone was a page 8,800 px tall (~140 px an entry),
    its newest entries and the failed one lost among them. The phone folds the older
    entries that went as expected (ok), each run of them one line that says how many
    and unfolds them; the newest ten and every other one (the failed step halfway, the
    wait) stay. A box shows them all, and stays ticked while the run's events redraw
    the timeline; a row a run event adds follows the same rule. At 1280 px every entry
    is shown, as before."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    with phone_site(tmp_path, "fold", [("long_wait", LONG_WAIT, [60], "waiting")]) as site:
        url = site.url
        for scheme in ("light", "dark"):
            with logged_in(browser, url, scheme=scheme) as page:
                page.goto(url + "/runs/" + LONG_WAIT)
                rows = page.locator(".timeline tr.op")
                expect(rows).to_have_count(62)  # (60 steps, the failed one, the wait)
                assert _folded_as_said(page, scheme) == 62 - NEWEST - 1
                failed = page.locator(".timeline tr.op.st-error")
                expect(failed).to_be_visible()
                expect(failed).to_contain_text("bug in fragile('halfway')")
                folded = page.evaluate("document.documentElement.scrollHeight")
                page.screenshot(path=str(tmp_path / f"folded-390-{scheme}.png"),
                                full_page=True)
                # A tap on a folded line unfolds them all: the page as it was.
                page.locator(".timeline tr.fold-gap label").first.click()
                expect(page.locator("#timeline-unfold")).to_be_checked()
                assert all(e[2] for e in page.evaluate(ENTRIES))
                assert not any(shown for _, shown in page.evaluate(GAPS))
                whole = page.evaluate("document.documentElement.scrollHeight")
                assert folded < whole / 3, (folded, whole)
                page.screenshot(path=str(tmp_path / f"unfolded-390-{scheme}.png"),
                                full_page=True)

        with logged_in(browser, url) as page:
            page.goto(url + "/runs/" + LONG_WAIT)
            before = _folded_as_said(page, "before the signal")
            # Unfolded, it stays so as the run's events redraw the timeline.
            page.locator("#timeline-unfold").check()
            site.signal(LONG_WAIT, "go")
            expect(page.locator("#run-status")).to_have_text("completed")
            rows = page.locator(".timeline tr.op")
            expect(rows).to_have_count(63)  # (the wait's row journaled, the last step)
            expect(page.locator("#timeline-unfold")).to_be_checked()
            assert all(e[2] for e in page.evaluate(ENTRIES))
            # Folded again: the new row follows the rule (the entry before the newest
            # ten went past them: folded with the others).
            page.locator("#timeline-unfold").uncheck()
            assert _folded_as_said(page, "after the signal") == before + 1

        # A wide screen shows every entry, with no folded line and no box.
        with logged_in(browser, url, viewport={"width": 1280, "height": 900},
                       touch=False) as page:
            page.goto(url + "/runs/" + LONG_WAIT)
            assert all(e[2] for e in page.evaluate(ENTRIES))
            assert not any(shown for _, shown in page.evaluate(GAPS))
            expect(page.locator(".unfold")).to_be_hidden()
