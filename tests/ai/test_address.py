"""``address``: a conversation's content-addressed form. It remembers the messages it
has worked out (an agent loop sends the same ones on every call); what it returns must
always be what it would work out afresh, whatever the caller did to its messages."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from tether.ai import _messages
from tether.ai._messages import address, canonical_json
from tether.errors import ConfigError


def fresh(messages: list[Any]) -> tuple[str | None, int, dict[str, str], int]:
    """The content-addressed form computed from scratch, as the module documents it."""
    blobs: dict[str, str] = {}
    head = None
    size = 0
    for m in messages:
        text = canonical_json(m)
        size += len(text.encode())
        key = hashlib.sha256(text.encode()).hexdigest()
        blobs[key] = text
        node = canonical_json({"msg": key, "prev": head})
        head = hashlib.sha256(node.encode()).hexdigest()
        blobs[head] = node
    return head, len(messages), blobs, size


def same(messages: list[Any]) -> None:
    ref = address(messages)
    assert (ref.head, ref.count, ref.blobs, ref.size) == fresh(messages)


def test_a_growing_conversation_is_addressed_as_from_scratch() -> None:
    messages: list[Any] = [{"role": "system", "content": "Be brief."}]
    for i in range(30):
        messages.append({"role": "user", "content": f"question {i} é"})
        same(messages)
        messages.append({"role": "assistant", "content": f"answer {i}", "name": None})
        same(messages)


def test_a_message_changed_in_place_is_addressed_again() -> None:
    """Edited content, an added key, a value turned nested or numeric: each is seen."""
    messages: list[Any] = [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "hello"}]
    same(messages)
    before = address(messages).head
    messages[0]["content"] = "Be thorough."
    same(messages)
    assert address(messages).head != before
    messages[1]["name"] = "ann"
    same(messages)
    messages[1]["content"] = [{"type": "text", "text": "hello"}]
    same(messages)
    messages[1]["content"][0]["text"] = "bye"  # nested: never remembered
    same(messages)
    messages[0]["content"] = "1"
    same(messages)
    messages[0]["content"] = 1
    same(messages)
    messages[0]["content"] = True
    same(messages)


def test_the_same_message_in_other_conversations_chains_after_their_heads() -> None:
    shared = {"role": "user", "content": "shared"}
    a = [{"role": "system", "content": "A"}, shared]
    b = [{"role": "system", "content": "B"}, shared]
    for conversation in (a, b, a, [shared], b):
        same(conversation)
    same([shared, shared, shared])


def test_random_edits_and_reuse_always_match_a_fresh_address() -> None:
    rng = random.Random(7)
    pool: list[dict[str, Any]] = [{"role": rng.choice(["user", "assistant"]),
                                   "content": f"m{i}"} for i in range(20)]
    for _ in range(500):
        conversation = [rng.choice(pool) for _ in range(rng.randint(0, 8))]
        if rng.random() < 0.3:
            victim = rng.choice(pool)
            victim["content"] = rng.choice([f"e{rng.random()}", None, 3, [1], {"a": "b"}])
        same(conversation)


def test_what_it_remembers_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_messages, "_ADDRESSED_LIMIT", 10)
    monkeypatch.setattr(_messages, "_ADDRESSED_BYTES", 2_000)
    messages = [{"role": "user", "content": f"{i}" * 50} for i in range(100)]
    for i in range(1, 101):
        same(messages[:i])
        assert len(_messages._addressed) <= 10
        assert _messages._addressed_bytes <= 2_000


def test_a_bad_message_is_refused_even_after_good_ones() -> None:
    good = {"role": "user", "content": "fine"}
    same([good])
    with pytest.raises(ConfigError, match="message 1"):
        address([good, {"content": "no role"}])
    with pytest.raises(ConfigError, match="message 1"):
        address([good, {"role": "user", "content": float("nan")}])


def test_the_same_list_changed_in_every_way_is_addressed_as_from_scratch() -> None:
    """An agent's list passed again is worked out from what was remembered for it: it
    must still come out as from scratch when the list grew, an earlier message was
    edited in place, replaced by an equal or a different one, made non-plain, removed,
    or the list was cut, cleared or refilled."""
    messages: list[Any] = [{"role": "system", "content": "Be brief."}]
    for i in range(6):
        messages += [{"role": "user", "content": f"q{i}"},
                     {"role": "assistant", "content": f"a{i}"}]
        same(messages)
    same(messages)  # unchanged
    messages[3]["content"] = "edited"
    same(messages)
    messages[3] = dict(messages[3])  # equal, another object
    same(messages)
    messages[2] = {"role": "user", "content": "replaced"}
    same(messages)
    messages[4]["content"] = 7  # no longer plain
    same(messages)
    messages.append({"role": "user", "content": "after a non-plain one"})
    same(messages)
    messages[4]["content"] = "plain again"
    same(messages)
    del messages[5:]
    same(messages)
    messages.insert(0, {"role": "system", "content": "first now"})
    same(messages)
    messages.clear()
    same(messages)
    messages += [{"role": "user", "content": "anew"}]
    same(messages)


def test_random_changes_to_one_list_always_match_a_fresh_address() -> None:
    rng = random.Random(11)
    pool: list[dict[str, Any]] = [{"role": rng.choice(["user", "assistant"]),
                                   "content": f"m{i}"} for i in range(15)]
    lists: list[list[Any]] = [[], [], []]
    for _ in range(1500):
        messages = rng.choice(lists)
        op = rng.random()
        if op < 0.45:
            messages.append(rng.choice(pool) if rng.random() < 0.5
                            else {"role": "user", "content": f"n{rng.random()}"})
        elif op < 0.6 and messages:
            rng.choice(messages)["content"] = rng.choice(
                [f"e{rng.random()}", None, 3, [1], "m1"])
        elif op < 0.7 and messages:
            messages[rng.randrange(len(messages))] = rng.choice(pool)
        elif op < 0.8 and messages:
            del messages[rng.randrange(len(messages)):]
        elif op < 0.85:
            messages.insert(0, rng.choice(pool))
        same(messages)


def test_what_it_remembers_of_lists_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_messages, "_PREFIX_LIMIT", 3)
    monkeypatch.setattr(_messages, "_PREFIX_BYTES", 3_000)
    monkeypatch.setattr(_messages, "_prefixes", {})
    monkeypatch.setattr(_messages, "_prefix_bytes", 0)
    monkeypatch.setattr(_messages, "_sighted", set())
    lists: list[list[Any]] = [[] for _ in range(8)]
    for i in range(40):
        for j, messages in enumerate(lists):
            messages.append({"role": "user", "content": f"{j}:{i}" * 10})
            same(messages)
            kept = _messages._prefixes
            assert len(kept) <= 3 and _messages._prefix_bytes <= 3_000
            assert _messages._prefix_bytes == sum(p.size for p in kept.values())
            assert len(_messages._sighted) <= 3
    big = [{"role": "user", "content": "x" * 4_000}]
    for _ in range(3):
        same(big)
        big.append({"role": "user", "content": "y"})
    assert id(big) not in _messages._prefixes and _messages._prefix_bytes <= 3_000


def test_a_list_is_remembered_from_its_second_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller that builds a new list for every call (``[*history, new]``) leaves
    nothing remembered of those lists; a list passed again is remembered, and a tuple
    never is."""
    monkeypatch.setattr(_messages, "_prefixes", {})
    monkeypatch.setattr(_messages, "_prefix_bytes", 0)
    monkeypatch.setattr(_messages, "_sighted", set())
    history: list[Any] = [{"role": "user", "content": "hi"}]
    kept = []
    for i in range(5):
        fresh_list = [*history, {"role": "user", "content": f"turn {i}"}]
        kept.append(fresh_list)  # (alive: each id is new)
        same(fresh_list)
    assert _messages._prefixes == {}
    agent = list(history)
    same(agent)
    assert _messages._prefixes == {}
    agent.append({"role": "assistant", "content": "yes"})
    same(agent)
    assert list(_messages._prefixes) == [id(agent)]
    same(tuple(agent))  # type: ignore[arg-type]
    assert list(_messages._prefixes) == [id(agent)]
