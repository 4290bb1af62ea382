"""The curl tour of docs/serve.md, run as it is written (the shell block after its
``<!-- curl-tour -->`` marker) against a real ``tether serve`` and worker of the
workflows it names: each command succeeds (``curl`` fails on an HTTP error here), and
the runs end as the tour says."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import ADMIN, ROOT, env, serving, start_worker

pytestmark = pytest.mark.slow

TOUR_APP = "tests.web.tour_app:app"


def _tour() -> str:
    text = (ROOT / "docs" / "serve.md").read_text()
    found = re.search(r"<!-- curl-tour -->\n```bash\n(.*?)```", text, re.S)
    assert found, "docs/serve.md has no curl tour"
    return found.group(1)


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("jq") is None,
                    reason="needs curl and jq")
def test_the_curl_tour_of_the_docs_runs_as_written(tmp_path: Path) -> None:
    script = _tour()
    db = f"sqlite:///{tmp_path}/tour.db"
    with serving(db, tmp_path, app=TOUR_APP, tokens=f"admin:{ADMIN}\n") as served:
        worker = start_worker(db, tmp_path, app=TOUR_APP)
        try:
            # (the tour's own URL made this server's; every answer checked by curl)
            run = subprocess.run(
                ["bash", "-c", "set -euo pipefail\n"
                 'curl() { command curl --fail-with-body --max-time 60 "$@"; echo; }\n'
                 + script.replace("http://127.0.0.1:8233", served.url)],
                env=env(TETHER_TOKEN=ADMIN), capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, (run.stdout, run.stderr)
            with httpx.Client(base_url=served.url, timeout=30,
                              headers={"Authorization": f"Bearer {ADMIN}"}) as http:
                greet = http.get("/api/v1/runs/greet-ada").json()
                assert greet["status"] == "completed" and greet["erased_at"] is not None
                for _ in range(300):
                    order = http.get("/api/v1/runs/order-7").json()
                    if order["status"] == "completed":
                        break
                    time.sleep(0.1)
                assert order["result"] == {"by": "ana"}, order
        finally:
            worker.terminate()
            worker.wait(10)
    answers = [json.loads(line) for line in run.stdout.splitlines()
               if line.startswith("{")]
    assert answers[0]["run_id"] == "greet-ada" and answers[0]["created"] is True
    assert "event: end" in run.stdout  # (the stream closed at the run's end)
    assert answers[-1]["erased"]["run_ids"] == ["greet-ada"]
    [page] = [a for a in answers if "runs" in a]  # (the second: the first went to jq)
    assert [r["run_id"] for r in page["runs"]] == ["greet-ada"], page
