"""Payload encryption with a worker that lacks the key: it fails closed without
destroying runs. It hands each run back (with a back-off) and logs the key id it lacks;
a worker with the right key completes them; none is marked failed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.engine.helpers import wait_for
from tests.life.procs import Workers
from tests.life.test_processes import cli, registered
from tether import App, RunStatus
from tether.encryption import AesGcm, sealed_view

pytestmark = [pytest.mark.slow, pytest.mark.faults]

KEY1, KEY2 = b"1" * 32, b"2" * 32


def keys(spec: dict[str, bytes]) -> dict[str, str]:
    return {"TETHER_PAYLOAD_KEYS": ",".join(
        f"{kid}:{base64.b64encode(k).decode()}" for kid, k in spec.items())}


async def test_a_worker_without_the_key_hands_runs_to_one_with_it(
        store_url: str, workers: Workers, tmp_path: Path) -> None:
    async with App(store_url, payload_hook=AesGcm({"k2": KEY2})) as client:
        # One worker lacks key id k2; another has other key material under that id.
        workers.start(env_extra=keys({"k1": KEY1}))
        workers.start(env_extra=keys({"k2": KEY1}))
        await wait_for(lambda: registered(client, 2), timeout=30, what="wrong workers up")
        handles = [await client.start("deploy", 0.05, run_id=f"enc-{i}") for i in range(3)]

        async def both_refused() -> bool:
            return all("cannot decrypt" in workers.log(i) for i in (0, 1))

        await wait_for(both_refused, timeout=60, what="both wrong workers handed back")
        for h in handles:
            run = await client.store.run_get(h.run_id)
            assert run is not None and run.status in (RunStatus.QUEUED, RunStatus.WAITING,
                                                      RunStatus.RUNNING), run.status
        assert workers.executions() == []  # nothing ran without the key
        right = workers.start(env_extra=keys({"k2": KEY2}))
        for h in handles:
            assert await h.result(timeout=90) == ["slow done", "quick done"]
        runs = [await client.get_run(h.run_id) for h in handles]
    assert all(r.status == RunStatus.COMPLETED for r in runs)
    assert {pid for pid, _ in workers.executions()} == {right.pid}
    assert "key id 'k2'" in workers.log(0) and "key id 'k2'" in workers.log(1)

    # Read without the key, `show` names the key it would need instead of failing.
    shown = cli("show", "enc-0", db=store_url, tmp=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "<encrypted with key id 'k2'>" in shown.stdout
    assert "slow done" not in shown.stdout


def test_sealed_view_names_only_the_key_id() -> None:
    sealed = AesGcm({"k7": KEY1}).encode('{"secret": 1}')
    assert sealed_view(sealed) == "<encrypted with key id 'k7'>"
    assert sealed_view('{"plain": true}') is None and sealed_view("tgcm1.") is None


async def test_show_without_the_key_prints_a_failed_run(store_url: str,
                                                        tmp_path: Path) -> None:
    """A failed run's error is a payload too: `show` without the key prints the key id
    it would need (it used to crash on the undecodable error)."""
    app = App(store_url, payload_hook=AesGcm({"k3": KEY1}))

    @app.workflow
    async def broken() -> None:
        raise ValueError("secret detail")

    async with app, app.worker():
        h = await app.start(broken, run_id="broken")
        with pytest.raises(Exception, match="secret detail"):
            await h.result(timeout=30)
    shown = cli("show", "broken", db=store_url, tmp=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "failed: <encrypted with key id 'k3'>" in shown.stdout
    assert "secret detail" not in shown.stdout


async def test_result_without_the_key_says_it_is_encrypted_and_app_decodes_it(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tether result`` (and ``RunHandle.result``) of an encrypted run read without the
    key say so, naming the key id, and exit 1; ``tether result --app MODULE:APP`` decodes
    it with that app's payload hook. Before, the ciphertext was parsed as JSON:
    ``tether: error: malformed JSON: Expecting value`` with the bad-input exit code 2 (a
    raw ``JSONDecodeError`` from the Python API), and ``result`` had no ``--app``."""
    from tether import PayloadError

    app = App(store_url, payload_hook=AesGcm({"k1": KEY1}))

    @app.workflow
    async def deploy(seconds: float) -> list[str]:  # as tests.life.apps names it
        return ["secret answer"]

    @app.workflow
    async def broken() -> None:
        raise ValueError("secret detail")

    async with app, app.worker():
        assert await (await app.start(deploy, 0.0, run_id="done")).result(timeout=30) \
            == ["secret answer"]
        with pytest.raises(Exception, match="secret detail"):
            await (await app.start(broken, run_id="broken")).result(timeout=30)
    async with App(store_url) as keyless:
        for run_id in ("done", "broken"):
            with pytest.raises(PayloadError, match="encrypted with key id 'k1'"):
                await keyless.handle(run_id).result(timeout=5)
    for run_id in ("done", "broken"):
        out = cli("result", run_id, db=store_url, tmp=tmp_path)
        assert out.returncode == 1 and out.stdout == "", out
        assert "encrypted with key id 'k1'" in out.stderr and "--app" in out.stderr
        assert "secret" not in out.stderr and "Traceback" not in out.stderr
    monkeypatch.setenv("TETHER_PAYLOAD_KEYS", keys({"k1": KEY1})["TETHER_PAYLOAD_KEYS"])
    out = cli("result", "done", "--app", "tests.life.apps:app", db=store_url, tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["secret answer"]
    out = cli("result", "broken", "--app", "tests.life.apps:app", db=store_url, tmp=tmp_path)
    assert out.returncode == 1 and "secret detail" in out.stderr, out


async def test_show_app_decodes_an_encrypted_runs_timeline(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tether show RUN_ID --app MODULE:APP`` (and with ``--json``) reads the run with
    that app's payload hook: its input, its steps' results and its result decoded, as
    ``tether serve --app`` shows them. Before, ``show`` had no ``--app``: an encrypted
    run's timeline could be read decoded only through ``serve`` or Python."""
    app = App(store_url, payload_hook=AesGcm({"k1": KEY1}))

    @app.step
    async def lookup(who: str) -> str:
        return f"secret step result for {who}"

    @app.workflow
    async def deploy(who: str) -> list[str]:  # as tests.life.apps names it
        return [await lookup(who), "secret answer"]

    async with app, app.worker():
        await (await app.start(deploy, "secret input", run_id="enc")).result(timeout=30)
    keyless = cli("show", "enc", db=store_url, tmp=tmp_path)
    assert keyless.returncode == 0, keyless.stderr
    assert "secret" not in keyless.stdout and "key id 'k1'" in keyless.stdout
    monkeypatch.setenv("TETHER_PAYLOAD_KEYS", keys({"k1": KEY1})["TETHER_PAYLOAD_KEYS"])
    shown = cli("show", "enc", "--app", "tests.life.apps:app", db=store_url, tmp=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for text in ("secret input", "secret step result for secret input", "secret answer"):
        assert text in shown.stdout, shown.stdout
    assert "encrypted with key id" not in shown.stdout
    doc = cli("show", "enc", "--json", "--app", "tests.life.apps:app", db=store_url,
              tmp=tmp_path)
    assert doc.returncode == 0, doc.stderr
    run = json.loads(doc.stdout)
    assert run["input"] == ["secret input"]
    assert run["result"] == ["secret step result for secret input", "secret answer"]
    assert run["journal"][0]["result"] == "secret step result for secret input"
