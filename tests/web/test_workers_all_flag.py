"""``GET /api/v1/workers?all=`` with a value that is no flag: the 400 names it in JSON's
words and cuts a long one as every echoed value is (``tether.errors.shown``). It was
Python's repr (``'yes'``), cut at 40 characters without saying so."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.web.helpers import ADMIN, serving


def test_an_all_that_is_no_flag_is_named_in_json_words(tmp_path: Path) -> None:
    long = "y" * 300
    with serving(f"sqlite:///{tmp_path}/t.db", tmp_path, tokens=f"admin:{ADMIN}\n") as served:
        said = {}
        for value in ("yes", "it's", long):
            r = httpx.get(f"{served.url}/api/v1/workers", params={"all": value},
                          headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "bad_request", r.text
            said[value] = r.json()["error"]["message"]
    head = "all must be true or false (1 or 0), not "
    assert said["yes"] == head + '"yes"'
    assert said["it's"] == head + '"it\'s"'
    assert said[long] == head + '"' + "y" * 99 + "… (302 characters)"
