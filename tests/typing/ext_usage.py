"""Type-checked by mypy (``files`` in pyproject.toml), not run by pytest: an integration
written against docs/extending.md, with every type it names imported from a public
module, passes ``mypy --strict``."""

from __future__ import annotations

import base64
import zlib
from typing import assert_type

from tether import App, PayloadError, RetryPolicy, ext
from tether.encryption import PayloadContext, PayloadHook
from tether.ext import RunRecord, SharedState, StepInfo


class Compressed:
    """docs/extending.md's payload hook, with the context."""

    def encode(self, text: str, context: PayloadContext | None = None) -> str:
        return base64.b64encode(zlib.compress(text.encode())).decode()

    def decode(self, text: str, context: PayloadContext | None = None) -> str:
        try:
            return zlib.decompress(base64.b64decode(text)).decode()
        except (ValueError, zlib.error) as exc:
            raise PayloadError(f"not a compressed payload: {exc}") from None


hook: PayloadHook = Compressed()
app = App("sqlite:///typing.db", payload_hook=hook)


async def search(query: str) -> list[str]:
    async def body(q: str) -> list[str]:
        info = ext.current_step()
        assert_type(info, StepInfo | None)
        return [q]

    result: list[str] = await ext.step(
        "acme:search", body, query, retry=RetryPolicy(max_attempts=5)
    )
    return result


async def awaiting(target: App) -> list[str]:
    # docs/extending.md: `ext.runs_awaiting_approval(app)` -> `RunRecord`s
    records: list[RunRecord] = await ext.runs_awaiting_approval(target, limit=10)
    state: SharedState = await ext.shared_state(target)
    await state.kv_cas(key="acme.seen", value=str(len(records)), version=None, now=0.0)
    return [r.run_id for r in records]
