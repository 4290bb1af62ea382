"""CPU of sealing a durable LLM call's new message texts through the payload hook.

    PYTHONPATH=src .venv/bin/python bench/blob_seal.py [--calls 20000] [--rounds 5]

An agent's turn stores two new messages (the model's answer, the next user message)
and their two chain nodes: what ``RunContext.write`` hands ``Codec.seal_blobs`` per
call in ``bench/llm_cost.py``'s conversation. Prints one JSON line: the median CPU per
call (µs) of ``seal_blobs`` with no hook (nothing done), with ``AesGcm`` (a keyed
digest and an AES-GCM encryption per text), and of ``open_blobs`` with ``AesGcm`` (a
read of the four, from a dict standing for the store).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from tether._codec import Codec
from tether.ai._messages import address
from tether.encryption import AesGcm


def _texts(i: int) -> dict[str, str]:
    """The four texts a turn adds (two messages, two nodes), by SHA-256."""
    messages = [{"role": "system", "content": "You are a research agent. Answer briefly."},
                {"role": "user", "content": "Find three sources on durable execution."},
                {"role": "assistant", "content": f"Noted; here is part {i} of the answer."},
                {"role": "user", "content": f"Go on with part {i + 1}."}]
    before = address(messages[:2]).blobs
    return {k: v for k, v in address(messages).blobs.items() if k not in before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    batches = [_texts(i) for i in range(a.calls)]
    assert all(len(b) == 4 for b in batches)
    plain, aes = Codec(), Codec(hook=AesGcm({"k1": bytes(range(32))}))
    out: dict[str, list[float]] = {"none_seal_us": [], "aesgcm_seal_us": [],
                                   "aesgcm_open_us": []}
    for _ in range(a.rounds):
        for name, codec in (("none_seal_us", plain), ("aesgcm_seal_us", aes)):
            t0 = time.process_time()
            for b in batches:
                codec.seal_blobs(b)
            out[name].append((time.process_time() - t0) / a.calls * 1e6)
        store = {k: v for b in batches[:2000] for k, v in aes.seal_blobs(b).items()}

        async def get(*, keys: list[str], store: dict[str, str] = store) -> dict[str, str]:
            return {k: store[k] for k in keys if k in store}

        async def reads() -> None:
            for b in batches[:2000]:
                await aes.open_blobs(get, list(b))

        t0 = time.process_time()
        asyncio.run(reads())
        out["aesgcm_open_us"].append((time.process_time() - t0) / 2000 * 1e6)
    print(json.dumps({k: round(statistics.median(v), 2) for k, v in out.items()}
                     | {"texts_per_call": 4, "calls": a.calls}))


if __name__ == "__main__":
    main()
