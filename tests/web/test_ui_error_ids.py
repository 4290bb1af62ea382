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
