"""The run ids an error names are drawn whole on the run page (``<span class="id">``,
which app.css keeps on one line: ``tether.serve._ui.with_ids``): in the failed run's
box (a ``<pre>``), and in its timeline's rows. Until 2026-12-07 only the run's own id
was: a ChildFailed-like message, ``run 'digest-2026-12-07-ef56.0' ended failed``, broke
the child's id at its hyphens on a phone ("'digest-2026-12-" / "07-ef56.0'"). The ids
marked are those the page knows (its children) and those the store holds (a run the
error quotes that is no relative); a quoted word that names no run is left as text."""

from __future__ import annotations

import asyncio
import html
import re

import pytest

import tether
from tests.web.helpers import READ, served_app
from tether import App
from tether.store._port import Wait

READ_HEADERS = {"Authorization": f"Bearer {READ}"}
OTHER = "other-2026-12-07-aa11"
NOBODY = "nobody-2026-12-07-cc33"
PARENT = "family-2026-12-07-bb22"
CHILD = f"{PARENT}.0"


def _marked(page: str, run_id: str) -> bool:
    """Whether ``page`` draws ``run_id`` (quoted, as an error says it) in an id's span."""
    return bool(re.search(r'<span class="id">&#39;' + re.escape(html.escape(run_id))
                          + r"&#39;[.,:;]*</span>", page))


async def test_every_run_id_an_error_names_is_drawn_whole(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def ready() -> str:
        return "ready"

    @app.step
    async def check() -> None:
        raise tether.NonRetryable(f"run {OTHER!r} is done but {NOBODY!r} is not")

    @app.workflow
    async def child() -> None:
        await check()

    @app.workflow
    async def family() -> None:
        await tether.call(child)

    async with served_app(app) as (_, http), app.worker():
        await (await app.start(ready, run_id=OTHER)).result(timeout=30)
        handle = await app.start(family, run_id=PARENT)
        with pytest.raises(tether.RunFailed):
            await handle.result(timeout=30)
        async with asyncio.timeout(30):
            while (await app.store.run_get(CHILD)).status != "failed":
                await asyncio.sleep(0.02)
        page = (await http.get(f"/runs/{PARENT}", headers=READ_HEADERS)).text
        child_page = (await http.get(f"/runs/{CHILD}", headers=READ_HEADERS)).text

    [failure] = re.findall(r'<section class="card failure">.*?</section>', page, re.S)
    [said] = re.findall(r"<pre>(.*?)</pre>", failure, re.S)
    assert CHILD in html.unescape(re.sub(r"<[^>]+>", "", said)), said
    # the child's id (the page's own child), the other run (in the store), whole
    assert _marked(said, CHILD), said
    assert _marked(said, OTHER), said
    # a quoted word that names no run: text
    assert NOBODY in html.unescape(said) and not _marked(said, NOBODY), said
    # The timeline's row of the child's result says it too: its line and its details.
    [row] = re.findall(r'<tr class="op k-child_result[^"]*">.*?</tr>', page, re.S)
    [line] = re.findall(r'<div class="err">(.*?)</div>', row, re.S)
    assert _marked(line, CHILD), line
    # The child's page: the other run its error names, its own id.
    [failure] = re.findall(r'<section class="card failure">.*?</section>', child_page, re.S)
    assert _marked(failure, OTHER) and not _marked(failure, NOBODY), failure


def _waits_box(page: str) -> str:
    [box] = re.findall(r'<section class="card callout waitbox" id="waits">(.*?)</section>',
                       page, re.S)
    return str(box)


def _bare_marked(text: str, run_id: str) -> bool:
    """Whether ``text`` draws ``run_id`` (unquoted, as a sentence or a bracket says it) in
    an id's span."""
    return bool(re.search(r'<span class="id">\(?' + re.escape(html.escape(run_id))
                          + r"[.,:;)]*</span>", text))


async def test_the_waiting_box_draws_the_run_ids_its_step_error_names_whole(
        store_url: str) -> None:
    """The box of a run waiting to retry a step says the attempt's error: it draws the
    run ids it names whole, as the timeline does. Until 2026-12-08 it was plain text."""
    app = App(store_url)

    @app.workflow
    async def ready() -> str:
        return "ready"

    @app.step(name="sync_crm", retry=tether.RetryPolicy(initial_interval=3600,
                                                           max_attempts=3))
    async def sync_crm(tag: str) -> str:
        raise ConnectionError(f"run {tag!r} holds the CRM's lock")

    @app.workflow
    async def retrying_later(tag: str) -> str:
        return await sync_crm(tag)

    async with served_app(app) as (_, http):
        async with app.worker():
            await (await app.start(ready, run_id=OTHER)).result(timeout=30)
            await app.start(retrying_later, OTHER, run_id="rl-1")
            async with asyncio.timeout(30):
                while (await app.store.run_get("rl-1")).status != "waiting":
                    await asyncio.sleep(0.02)
        box = _waits_box((await http.get("/runs/rl-1", headers=READ_HEADERS)).text)
        assert "Waiting to retry" in box, box
        [said] = re.findall(r'<p class="small err">(.*?)</p>', box, re.S)
        assert _marked(said, OTHER), said


async def test_the_box_of_a_wait_after_a_store_error_draws_its_run_ids_whole(
        store_url: str) -> None:
    """The worker's own wait after a failed store call (worker/_worker.py), made here by
    the store calls it uses: its box says the error, the run ids it names whole."""
    app = App(store_url)

    @app.workflow
    async def ready() -> str:
        return "ready"

    async with served_app(app) as (_, http):
        await app.start(ready, run_id=OTHER)
        await app.start(ready, run_id="se-1")
        now = app.clock.now()
        claims = await app.store.run_claim(worker_id="w-test", queues=["default"],
                                           limit=2, now=now, lease_seconds=30)
        [claim] = [c for c in claims if c.run.run_id == "se-1"]
        await app.store.run_release(lease=claim.lease, now=now, wait=Wait(
            now + 3600, f"retry after a store error: the lock of {OTHER} was lost"))
        box = _waits_box((await http.get("/runs/se-1", headers=READ_HEADERS)).text)
        assert "Waiting to replay" in box, box
        [said] = re.findall(r'<p class="small err">(.*?)</p>', box, re.S)
        assert _bare_marked(said, OTHER), said


async def test_an_earlier_generations_rows_draw_the_run_ids_their_errors_name_whole(
        store_url: str) -> None:
    """The table of an earlier generation (a run continued as new) says each failed
    operation's error: the run ids it names are drawn whole, as in the timeline. Until
    2026-12-08 they were plain text, broken at their hyphens on a phone."""
    app = App(store_url)

    @app.workflow
    async def ready() -> str:
        return "ready"

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def check(round_no: int) -> None:
        if round_no == 0:
            raise tether.NonRetryable(f"run {OTHER!r} is not done")

    @app.workflow
    async def rounds(round_no: int) -> int:
        try:
            await check(round_no)
        except tether.StepError:
            pass
        if round_no < 1:
            tether.continue_as_new(round_no + 1)
        return round_no

    async with served_app(app) as (_, http):
        async with app.worker():
            await (await app.start(ready, run_id=OTHER)).result(timeout=30)
            assert await (await app.start(rounds, 0, run_id="gr-1")).result(timeout=30) == 1
        page = (await http.get("/runs/gr-1", headers=READ_HEADERS)).text
    section = page.split('id="generations"', 1)[1].split("</section>", 1)[0]
    [row] = re.findall(r'<tr class="op k-step[^"]*">.*?</tr>', section, re.S)
    [said] = re.findall(r'<div class="err">(.*?)</div>', row, re.S)
    assert _marked(said, OTHER), said


async def test_a_cancelled_runs_own_error_line_draws_the_run_ids_it_names_whole(
        store_url: str) -> None:
    """A run whose clean-up raised as it was cancelled: the Cancelled card's line "It
    stopped on an error of its own" draws the run ids the error names whole, as its
    details do. Until 2026-12-08 the line was plain text."""
    app = App(store_url)

    @app.workflow
    async def ready() -> str:
        return "ready"

    @app.workflow
    async def cleanup_fails() -> object:
        try:
            return await tether.wait_for_signal("go")
        except tether.Cancelled:
            raise RuntimeError(f"could not give back the lock of run {OTHER!r}") from None

    async with served_app(app) as (_, http):
        async with app.worker():
            await (await app.start(ready, run_id=OTHER)).result(timeout=30)
            await app.start(cleanup_fails, run_id="lx-1")
            async with asyncio.timeout(30):
                while (await app.store.run_get("lx-1")).status != "waiting":
                    await asyncio.sleep(0.02)
                await app.cancel("lx-1")
                while (await app.store.run_get("lx-1")).status != "cancelled":
                    await asyncio.sleep(0.02)
        page = (await http.get("/runs/lx-1", headers=READ_HEADERS)).text
    [line] = re.findall(r'<p class="small own-error">(.*?)</p>', page, re.S)
    assert "could not give back the lock of run" in line, line
    assert _marked(line, OTHER), line
