"""A blocked, a running and waiting runs' pages and the inbox on a touch screen (390 x
844, light and dark) in a real headless Chromium: no page scrolls sideways; what a
thumb presses (a timeline row's fork link, a "details", a button, a link on its own
line) is 40 px tall; the fork link is shown where nothing hovers, and reached with Tab,
with a ring, where something does; a command and the runs table too wide for their box
have a shade on the edge they scroll towards; a run id in a form's note is read on one line.
Screenshots go to the test's temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web.helpers import logged_in, phone_site, wait_for
from tests.web.test_browser import browser as browser  # the fixture
from tests.web.test_browser_walk import HEIGHTS, ONE_LINE

pytestmark = pytest.mark.slow

WAITING = "research-2026-12-07-ab12"
BUDGET = "budget-2026-12-07-cd34"
APPROVAL = "purchase-2026-12-07-ef56"
RUNNING = "running-2026-12-07-aa11"
BLOCKED = "nightly-digest-2026-12-07-blocked-9f3a"
DONE = "research-3"
PARENT = "digest-2026-12-07-ef56"

#: What a thumb presses on these pages, links that stand on their own line included.
TARGETS = ("main button, main input:not([type=hidden]), main summary, a.forkhere,"
           " .approval-head a, h2 a, .tree li > a, .fan-out li > a, .inbox p.small > a")

#: Whether the page scrolls sideways (wider than its window).
SIDEWAYS = "() => document.documentElement.scrollWidth > window.innerWidth"

#: Whether an element's box draws a shade on the edges it scrolls towards: the covers
#: that move with its content (``local``) over the shades that stay (``scroll``).
SHADED = ("e => { const s = getComputedStyle(e); return e.scrollWidth > e.clientWidth"
          " && (s.backgroundImage.match(/linear-gradient/g) || []).length === 4"
          " && s.backgroundAttachment.startsWith('local, local, scroll, scroll'); }")


def test_run_pages_on_a_touch_screen(browser: object, tmp_path: Path) -> None:
    """At 390 px on a touch screen: the fork link was invisible (shown on hover only)
    and 13 px tall, a "details" 17 px; a command cut at the box's edge and the
    timeline cut at "Started" read as whole; the signal form's note broke the run id at
    its hyphens ("research-2026-12-07-" / "ab12.")."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    runs = [("wait_go", WAITING, [], "waiting"),
            ("over_budget", BUDGET, ["What is it?"], "waiting"),
            ("purchase", APPROVAL, ["atlas"], "waiting"),
            ("gated_later", RUNNING, ["ana", "gate"], "running"),
            ("steps", DONE, [3], "completed"), ("waiting_parent", PARENT, [], "waiting")]
    with phone_site(tmp_path, "phone", runs, blocked=[BLOCKED],
                    worker_env={"TETHER_TEST_GATE_DIR": str(tmp_path)}) as site:
        try:
            _run_pages(browser, site.url, tmp_path)
        finally:
            (tmp_path / "gate").touch()  # (the running step ends: the worker stops at once)


def _run_pages(browser: object, url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    for scheme in ("light", "dark"):
        with logged_in(browser, url, scheme=scheme) as page:
            assert page.evaluate("matchMedia('(hover: none)').matches")
            for run_id in (BLOCKED, RUNNING, BUDGET, APPROVAL, WAITING, DONE, PARENT):
                page.goto(url + "/runs/" + run_id)
                expect(page.locator("#run-status")).to_be_visible()
                page.screenshot(path=str(tmp_path / f"{run_id}-390-{scheme}.png"),
                                full_page=True)
                assert not page.evaluate(SIDEWAYS), f"{run_id}: the page scrolls sideways"
                forks = page.locator("a.forkhere")
                if run_id != WAITING:  # (its one row, its wait, has no position yet)
                    expect(forks.first).to_be_visible()
                shown = forks.evaluate_all("els => els.map(e => getComputedStyle(e).opacity)")
                assert set(shown) <= {"1"}, f"{run_id}: the fork link is not shown: {shown}"
                found = page.locator(TARGETS).evaluate_all(HEIGHTS)
                short = [(name, height) for name, height in found if height < 40]
                assert not short, f"{run_id}: under 40 px tall on a phone: {short}"
                # (the timeline's entries are blocks at the card's width: nothing
                # to scroll to; tests/web/test_browser_phone_timeline.py)
                assert page.locator(".timeline").evaluate(
                    "e => e.parentElement.scrollWidth <= e.parentElement.clientWidth")
            names = {str(name) for name, _ in found}
            assert {f"{PARENT}.0", "list them"} <= names, names  # (the last page's)
            page.goto(url + "/runs")
            assert page.locator(".scroll-x").first.evaluate(SHADED), \
                "the runs table has no shade where it scrolls"
            page.goto(url + "/approvals")
            link = page.locator(".inbox p.small > a", has_text=APPROVAL)
            assert link.evaluate("e => e.getBoundingClientRect().height") >= 40
            assert not page.evaluate(SIDEWAYS), "the inbox scrolls sideways"
            page.goto(url + "/runs/" + BLOCKED)
            command = page.locator(".failure code", has_text="tether resume")
            expect(command).to_have_text(f"tether resume {BLOCKED}")
            assert command.evaluate(SHADED), "the command has no shade where it scrolls"
            page.goto(url + "/runs/" + WAITING)
            assert page.locator("#waits code").evaluate(SHADED)

    # The note of the signal form: the run id on one line, its full stop with it.
    with logged_in(browser, url, touch=False) as page:
        page.goto(url + "/runs/" + WAITING)
        page.locator("#waits button").click()
        note = page.locator("main > .flash")
        expect(note).to_contain_text(f"Sent signal 'go' to run {WAITING}.")
        page.screenshot(path=str(tmp_path / "note-390.png"))
        said = note.locator(".id")
        expect(said).to_have_text(f"{WAITING}.")
        assert said.evaluate(ONE_LINE), "the run id in the note broke over two lines"
        assert not page.evaluate(SIDEWAYS), "the page scrolls sideways"


def test_the_fork_link_with_a_mouse_and_a_keyboard(browser: object, tmp_path: Path) -> None:
    """Where a pointer hovers, a row's fork link shows on the row under it, and on a
    Tab to it with a 2 px ring in the accent colour (the browser's own thin ring, 1 px,
    was all that marked it)."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    with phone_site(tmp_path, "mouse", [("steps", DONE, [2], "completed")]) as site, \
            logged_in(browser, site.url, viewport={"width": 1280, "height": 900},
                      touch=False) as page:
        page.goto(site.url + "/runs/" + DONE)
        assert not page.evaluate("matchMedia('(hover: none)').matches")
        fork = page.locator("a.forkhere").first
        opacity = "e => getComputedStyle(e).opacity"
        assert fork.evaluate(opacity) == "0"  # (until its row is hovered)
        page.locator("tr.op").first.hover()
        assert fork.evaluate(opacity) == "1"
        page.mouse.move(0, 0)
        page.locator("h1").click()
        for _ in range(80):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.classList.contains('forkhere')"):
                break
        else:
            raise AssertionError("Tab never reached a fork link")
        focused = page.locator("a.forkhere:focus")
        assert focused.evaluate(opacity) == "1"
        ring = focused.evaluate("e => [getComputedStyle(e).outlineStyle,"
                                " parseFloat(getComputedStyle(e).outlineWidth)]")
        assert ring[0] not in ("none", "") and ring[1] >= 2, ring
        page.screenshot(path=str(tmp_path / "fork-focused.png"))


#: What a finger presses on a page: each link, button, "details" and field shown, and
#: a box's label (the box is in it). For each, its text, its height, and whether a
#: finger meets it in its middle and 3 px inside its top or its bottom edge (nothing
#: clips its box; two links a line apart, a run's id and "fork of ..." under it, share
#: the space between them, the later one drawn over the other); each is scrolled to the
#: middle of the window first.
PRESSED = """() => [...document.querySelectorAll(
    'header a, header button, main a, main button, main summary, main select,'
    + ' main input:not([type=hidden]):not([type=checkbox]),'
    + ' main label:has(> input[type=checkbox])')]
  .filter(e => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden')
  .map(e => {
    e.scrollIntoView({block: 'center', inline: 'nearest'});
    const r = e.getClientRects()[0], x = r.left + Math.min(r.width / 2, 20);
    const hit = y => { const at = document.elementFromPoint(x, y);
                       return !!at && (at === e || e.contains(at)); };
    return [(e.textContent || e.name || '').trim().slice(0, 40), Math.round(r.height),
            hit(r.top + r.height / 2) && (hit(r.top + 3) || hit(r.bottom - 3))];
  })"""

#: Whether a box that scrolls (a wide table's) scrolls up and down too: a link's box
#: beyond its cell would make it, unless the box clips it.
SCROLLS_DOWN = ("() => [...document.querySelectorAll('.scroll-x')].some(e =>"
                " e.scrollHeight > e.clientHeight && getComputedStyle(e).overflowY !== 'hidden')")

FAMILY = "family-2026-12-07-bb22"
FORK = "fork-2026-12-07-dd44"


def test_what_a_finger_presses_is_40_px_tall_on_a_touch_screen(browser: object,
                                                                tmp_path: Path) -> None:
    """On a touch screen at 390 px, a link in a table's cell or in a sentence was 20 px
    tall (17 in small text): a run id in the runs list, "needs approval", the head's
    "child of" and "forked from", a timeline row's child run, the approve page's run.
    Each is 40 px tall now, where a finger meets it, its lines where they were; at
    1280 px with a mouse, a link is its line's height, as before."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    runs = [("failing_parent", FAMILY, ["x-1"], "failed"),
            ("purchase", APPROVAL, ["atlas"], "waiting"), ("steps", DONE, [3], "completed")]
    with phone_site(tmp_path, "fingers", runs) as site:
        site.fork(DONE, 1, FORK)
        wait_for(site.url, FORK, "completed")
        pages = ("/runs", f"/runs/{FAMILY}", f"/runs/{FAMILY}.0", f"/runs/{FORK}",
                 f"/runs/{APPROVAL}", "/approvals")
        for scheme in ("light", "dark"):
            with logged_in(browser, site.url, scheme=scheme) as page:
                seen: set[str] = set()
                for path in (*pages, "decide"):
                    if path == "decide":  # (Enter in an inbox card's note: "choose")
                        page.goto(site.url + "/approvals")
                        page.fill("input[name=note]", "why not")
                        page.press("input[name=note]", "Enter")
                        expect(page.locator("h1")).to_have_text("Approve or reject?")
                    else:
                        page.goto(site.url + path)
                    found = page.evaluate(PRESSED)
                    page.evaluate("window.scrollTo(0, 0)")
                    page.screenshot(path=str(tmp_path / f"fingers{path.replace('/', '-')}"
                                                        f"-390-{scheme}.png"), full_page=True)
                    short = [(name, h) for name, h, _ in found if h < 40]
                    assert not short, f"{path}: under 40 px on a touch screen: {short}"
                    missed = [name for name, _, met in found if not met]
                    assert not missed, f"{path}: a finger misses them at their edges: {missed}"
                    assert not page.evaluate(SCROLLS_DOWN), f"{path}: a box scrolls down"
                    seen.update(name for name, _, _ in found)
                # (the links that were 20 px tall were among those measured)
                assert {FAMILY, f"{FAMILY}.0", DONE, APPROVAL, "needs approval",
                        "log out"} <= seen, seen

        # With a mouse on a desktop, a link is as tall as its line: nothing changed.
        with logged_in(browser, site.url, viewport={"width": 1280, "height": 900},
                       touch=False) as page:
            for path, link in (("/runs", f"main td a[href$='/runs/{DONE}']"),
                               (f"/runs/{FORK}", f".meta a[href$='/runs/{DONE}']"),
                               (f"/runs/{FAMILY}", "tr.k-child_result td a")):
                page.goto(site.url + path)
                height, line = page.locator(link).first.evaluate(
                    "e => [e.getBoundingClientRect().height,"
                    " parseFloat(getComputedStyle(e).lineHeight)]")
                assert height <= line + 1, (path, height, line)
