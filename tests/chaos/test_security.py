"""Security canaries (issue 12): secrets planted in a run's input, a tool result, an
exception and a signal are searched for, byte for byte, in the store's files, the logs
and the CLI's output. Without protection they are there (the scan works); with the
opt-in AES-GCM payload hook no known plaintext is left, error messages included; the
wrong key fails closed; a redaction hook removes the API key before it is journaled."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

import tether
from tests import forked
from tether import App, PayloadError
from tether.encryption import AesGcm, PayloadDecryptError, Redact

API_KEY = "sk-canary-5f3a9c1e7b2d4680"
PERSON = "Ada Canary-Lovelace, born 1815-12-10, card 4111 1111 1111 1111"
TOOL = "tool-result-canary-9e8d7c"
SECRET_ERR = "exception-canary-0b1c2d"
SIGNAL = "signal-canary-a1b2c3"
CANARIES = [API_KEY, PERSON, TOOL, SECRET_ERR, SIGNAL]
KEY1 = bytes(range(32))
KEY2 = bytes(range(32, 64))


def build(url: str, hook: object = None) -> App:
    app = App(url, payload_hook=hook)  # type: ignore[arg-type]

    @app.step
    async def call_tool(prompt: str, api_key: str) -> str:
        return f"{TOOL} for {prompt[:3]}"

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def leaky() -> None:
        raise RuntimeError(f"provider said no to {API_KEY}: {SECRET_ERR}")

    @app.workflow(name="agent")
    async def agent(prompt: str, api_key: str) -> dict[str, str]:
        out = await call_tool(prompt, api_key)
        approval = await tether.wait_for_signal("approve")
        try:
            await leaky()
        except Exception as exc:
            return {"tool": out, "approval": approval, "error": str(exc)}
        return {}

    @app.workflow(name="fails")
    async def fails() -> None:
        await leaky()

    return app


def found(folder: Path, text: str) -> int:
    needle = text.encode()
    return sum(p.read_bytes().count(needle) for p in folder.iterdir() if p.is_file())


async def exercise(app: App) -> None:
    async with app, app.worker(poll_interval=0.05):
        handle = await app.start("agent", PERSON, API_KEY, run_id="a1")
        await app.signal("a1", "approve", {"by": SIGNAL})
        result = await handle.result(timeout=30)
        assert result["tool"].startswith(TOOL)
        assert API_KEY in result["error"] or "[redacted]" in result["error"]  # lossy redaction
        failed = await app.start("fails", run_id="f1")
        with pytest.raises(tether.RunFailed):
            await failed.result(timeout=30)


async def test_without_protection_the_scan_finds_every_canary(tmp_path: Path) -> None:
    await exercise(build(f"sqlite:///{tmp_path}/t.db"))
    assert all(found(tmp_path, c) for c in CANARIES)


async def test_aes_gcm_leaves_no_known_plaintext_and_fails_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    caplog.set_level(logging.DEBUG)
    await exercise(build(url, AesGcm({"k1": KEY1})))
    for canary in CANARIES:
        assert found(tmp_path, canary) == 0, canary
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert API_KEY not in logged
    # The right key reads everything back.
    async with build(url, AesGcm({"k1": KEY1})) as app:
        info = await app.get_run("a1")
        assert info.input == [PERSON, API_KEY]
    # A wrong key, or no key for the payload's id, fails closed and says which id:
    # reading the result raises; inspection shows the ciphertext, never a guess.
    for wrong in (AesGcm({"k1": KEY2}), AesGcm({"k9": KEY1}), None):
        async with build(url, wrong) as app:
            info = await app.get_run("a1")
            assert str(info.input).startswith("tgcm2.k1."), info.input
            with pytest.raises(PayloadError) as caught:
                await app.handle("a1").result(timeout=1)
            if wrong is not None:
                assert isinstance(caught.value, PayloadDecryptError)
            assert "'k1'" in str(caught.value)  # (without a hook too, since 071c493)
            assert not any(c in str(caught.value) for c in CANARIES)
    # Rotation: a new active key reads the old payloads and writes new ones under k2.
    async with build(url, AesGcm({"k2": KEY2, "k1": KEY1})) as app:
        assert (await app.get_run("a1")).input == [PERSON, API_KEY]
        await app.start("agent", "new", "k", run_id="a2")
    async with build(url, AesGcm({"k2": KEY2})) as app:
        assert (await app.get_run("a2")).input == ["new", "k"]
        with pytest.raises(PayloadDecryptError, match="'k1'"):
            await app.handle("a1").result(timeout=1)
    # The CLI (which has no key) prints no canary either.
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    for args in (["runs"], ["show", "a1"], ["show", "a1", "--json"]):
        done = forked.run([sys.executable, "-m", "tether", *args, "--db", url],
                          capture_output=True, text=True, env=env, timeout=60)
        assert not any(c in done.stdout + done.stderr for c in CANARIES), args


async def test_redaction_hook_removes_the_api_key_before_it_is_journaled(
    tmp_path: Path,
) -> None:
    await exercise(build(f"sqlite:///{tmp_path}/t.db",
                         Redact([r"sk-canary-[0-9a-f]{16}"])))
    assert found(tmp_path, API_KEY) == 0
    assert found(tmp_path, "[redacted]") > 0
    assert found(tmp_path, TOOL) > 0  # only what matches is redacted


def test_bad_keys_are_refused_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.errors import ConfigError

    with pytest.raises(ConfigError, match="16, 24 or 32"):
        AesGcm({"k1": b"short"})
    with pytest.raises(ConfigError, match="without dots"):
        AesGcm({"a.b": KEY1})
    monkeypatch.setenv("TETHER_PAYLOAD_KEYS", "k1:not base64!")
    with pytest.raises(ConfigError, match="base64"):
        AesGcm.from_env()
    monkeypatch.setenv("TETHER_PAYLOAD_KEYS", "k2:" + __import__("base64").b64encode(KEY2)
                       .decode())
    assert AesGcm.from_env().active == "k2"
    # One id given two keys (a rotation that reused the id) was taken silently, the
    # last key winning: the runs written with the first could not be read.
    b64 = [__import__("base64").b64encode(k).decode() for k in (KEY1, KEY2)]
    monkeypatch.setenv("TETHER_PAYLOAD_KEYS", f"k1:{b64[0]},k1:{b64[1]}")
    with pytest.raises(ConfigError, match="'k1' is given twice with different keys"):
        AesGcm.from_env()
    monkeypatch.setenv("TETHER_PAYLOAD_KEYS", f"k1:{b64[0]},k1:{b64[0]}")  # the same key
    assert AesGcm.from_env().active == "k1"
