"""Content-addressed prompts: each message is stored once, and a call's journal entry
holds a reference to its conversation instead of the conversation.

A conversation is a hash chain. Each message is stored under the SHA-256 of its
canonical JSON; each *position* in the conversation is a small node
``{"msg": <message digest>, "prev": <previous node digest or null>}``, stored under the
SHA-256 of its own text. The digest of the last node (the *head*) names the whole
conversation, so the journal entry of a call is constant-size however long the
conversation is::

    call 1: [sys, u1]               -> head n2      nodes n1, n2   messages sys, u1
    call 2: [sys, u1, a1, u2]       -> head n4      nodes n3, n4   messages a1, u2 (new)

A conversation that grows by appending (an agent loop) therefore stores each message
and one node per message, once: the store grows with the distinct message bytes, not
with the sum of the prompts. The same system prompt used by a thousand runs is one
blob. Editing an earlier message forks the chain at that point, and only the fork's
nodes are new.

Why a chain rather than a list of message digests in the journal: a list is 66 bytes
per message per call, which is again quadratic (100 turns of 2 messages cost 1.3 MB of
digests alone); the chain is 64 bytes per call.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from tether.errors import ConfigError

if TYPE_CHECKING:
    from tether.ext import SharedState

__all__ = ["ContentRef", "address", "canonical_json", "digest", "load_conversation"]


#: Built once: ``json.dumps`` with these options builds a new encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)


def canonical_json(value: Any, what: str = "value") -> str:
    """The one JSON text of ``value``: sorted keys, no spaces, UTF-8 kept as is.

    Raises:
        ConfigError: ``value`` is not JSON (a message must be plain data).
    """
    try:
        return _CANONICAL.encode(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not JSON-serializable: {exc}") from None


def _node(key: str, prev: str | None) -> str:
    """``canonical_json({"msg": key, "prev": prev})`` for two hex digests, written out
    (the keys in order, nothing to escape)."""
    if prev is None:
        return '{"msg":"' + key + '","prev":null}'
    return '{"msg":"' + key + '","prev":"' + prev + '"}'


def digest(text: str) -> str:
    """The key of a stored text: the hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ContentRef:
    """A call's prompt in content-addressed form.

    Attributes:
        head: the digest of the conversation's last node (``None`` when empty).
        count: how many messages the conversation has.
        blobs: every text the references need (messages and nodes), by digest.
        size: the conversation's message bytes (canonical JSON), for estimates.
    """

    head: str | None
    count: int
    blobs: dict[str, str]
    size: int


#: Most messages, and most bytes of their texts, remembered by ``address`` (past either,
#: it starts over): the memory it holds stays within about twice 16 MiB.
_ADDRESSED_LIMIT = 16_384
_ADDRESSED_BYTES = 16 * 1024 * 1024

#: What ``address`` worked out for a message, by ``id``: the message itself (so that
#: its id is not reused while remembered), a copy of it as it was, its text, digest and
#: UTF-8 size, and the node it made after the head ``prev``.
_Addressed = tuple[dict[str, Any], dict[str, Any], str, str, int, str | None, str, str]
_addressed: dict[int, _Addressed] = {}
_addressed_bytes = 0


@dataclass(slots=True)
class _Prefix:
    """What ``address`` worked out for the plain messages at the start of a sequence the
    caller passed (kept by the sequence's ``id``): the sequence itself (so that its id
    is not reused while remembered), those messages, copies of them as they were, and
    the head, size and texts of that prefix."""

    owner: Sequence[Mapping[str, Any]]
    messages: list[Mapping[str, Any]]
    copies: list[dict[str, Any]]
    head: str | None
    size: int
    blobs: dict[str, str]


#: Most sequences, and most message bytes of their prefixes, remembered (past either,
#: it starts over; a longer prefix is not remembered): with the prefixes' texts and the
#: copies of their messages, the memory held stays within a few times 16 MiB.
_PREFIX_LIMIT = 4_096
_PREFIX_BYTES = 16 * 1024 * 1024
_prefixes: dict[int, _Prefix] = {}
_prefix_bytes = 0
#: The ids of lists seen once.
_sighted: set[int] = set()


def _plain(message: object) -> TypeGuard[dict[str, Any]]:
    """A message whose copy is all of it and whose equality is exact: a plain dict of
    strings or None (``True == 1``, ``1 == 1.0``: numbers are not)."""
    return type(message) is dict and all(v is None or type(v) is str
                                         for v in message.values())


def address(messages: Sequence[Mapping[str, Any]]) -> ContentRef:
    """The content-addressed form of a conversation (pure; nothing is stored).

    An agent loop sends its conversation again on every call, grown by a message or
    two: a message already addressed, still the same object and unchanged (compared
    with a copy kept of it), is not encoded and hashed again, so a call costs what its
    new messages cost, not the whole conversation. Only plain dicts whose values are all
    strings or None are remembered: a copy of those is all of them, and their equality
    is exact (``True == 1``, ``1 == 1.0``: numbers are not); a message with other values
    (tool calls, content parts) is encoded every time.

    The same list passed again (an agent's list of messages, grown) starts from what
    was worked out for it last time when its first messages are still those objects,
    unchanged: two comparisons of the lists in C instead of a lookup per message, and
    the texts of that prefix copied at once. (A list is remembered from the second time
    it comes: one built anew for every call costs nothing more.)

    Raises:
        ConfigError: a message is not a JSON object with a ``role``.
    """
    global _prefix_bytes
    if type(messages) is not list:
        return ContentRef(*_addressed_as_is(messages))
    seen = _prefixes.get(id(messages))
    start = 0
    if seen is None and id(messages) not in _sighted:
        # (A list seen once, as a caller that builds a new list for every call makes
        # them: remembered only when it comes again, so such a caller copies nothing.
        # Only its id is kept: a new list that reuses it is remembered a call early.)
        if len(_sighted) >= _PREFIX_LIMIT:
            _sighted.clear()
        _sighted.add(id(messages))
        return ContentRef(*_addressed_as_is(messages))
    if seen is not None:
        k = len(seen.messages)
        # (Both in C: the same objects, then each equal to its copy; a plain message's
        # copy shares its strings, so equal ones compare by identity.)
        if (seen.owner is messages and k <= len(messages)
                and all(map(operator.is_, messages, seen.messages))
                and seen.copies == messages[:k]):
            start = k
        else:
            del _prefixes[id(messages)]
            _prefix_bytes -= seen.size
            seen = None
    if seen is not None:
        blobs, head, size = dict(seen.blobs), seen.head, seen.size
    else:
        blobs, head, size = {}, None, 0
    plain, at_end = _address_from(messages, start, blobs, head, size)
    head, size = at_end[1], at_end[2]
    if plain > start:
        p_blobs, p_head, p_size = (dict(blobs), head, size) if plain == len(messages) \
            else at_end[3]
        new = messages[start:plain]
        if seen is not None:  # (taken out; back below, grown, if it fits)
            del _prefixes[id(messages)]
            _prefix_bytes -= seen.size
        if p_size <= _PREFIX_BYTES:
            if len(_prefixes) >= _PREFIX_LIMIT or _prefix_bytes + p_size > _PREFIX_BYTES:
                _prefixes.clear()
                _prefix_bytes = 0
            if seen is not None:  # (the same lists, longer)
                seen.messages.extend(new)
                seen.copies.extend(dict(m) for m in new)
                seen.head, seen.size, seen.blobs = p_head, p_size, p_blobs
            else:
                seen = _Prefix(messages, list(new), [dict(m) for m in new], p_head, p_size,
                               p_blobs)
            _prefixes[id(messages)] = seen
            _prefix_bytes += p_size
    return ContentRef(head, len(messages), at_end[0], size)


_State = tuple[dict[str, str], str | None, int]


def _addressed_as_is(messages: Sequence[Mapping[str, Any]],
                     ) -> tuple[str | None, int, dict[str, str], int]:
    """``ContentRef``'s fields for ``messages``, nothing remembered of the sequence."""
    _, (blobs, head, size, _) = _address_from(messages, 0, {}, None, 0)
    return head, len(messages), blobs, size


def _address_from(messages: Sequence[Mapping[str, Any]], start: int, blobs: dict[str, str],
                  head: str | None, size: int,
                  ) -> tuple[int, tuple[dict[str, str], str | None, int, _State]]:
    """``address`` of ``messages`` from index ``start`` on, after a prefix whose texts,
    head and size are given (``blobs`` is filled in): how many messages at the start
    are plain (``_plain``; ``start`` at least), and the texts, head and size at the end
    and, if a message that is not plain ends the plain ones, at that point (a copy)."""
    global _addressed_bytes
    plain = start
    ended = False
    cut: _State = (blobs, head, size)
    for i in range(start, len(messages)):
        message = messages[i]
        seen = _addressed.get(id(message))
        if seen is not None and seen[0] is message and seen[1] == message:
            _, _, text, key, nbytes, prev, node_key, node = seen
            if prev != head:  # the same message after another conversation's head
                node = _node(key, head)
                node_key = digest(node)
            is_plain = True
        else:
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise ConfigError(f"message {i} must be a dict with a 'role' "
                                  f"(got {type(message).__name__})")
            text = canonical_json(message, f"message {i}")
            nbytes = len(text.encode())
            key = digest(text)
            node = _node(key, head)
            node_key = digest(node)
            is_plain = False
            if _plain(message):
                is_plain = True
                if (len(_addressed) >= _ADDRESSED_LIMIT
                        or _addressed_bytes + nbytes > _ADDRESSED_BYTES):
                    _addressed.clear()
                    _addressed_bytes = 0
                _addressed[id(message)] = (message, dict(message), text, key, nbytes, head,
                                           node_key, node)
                _addressed_bytes += nbytes
        if not ended:
            if is_plain:
                plain = i + 1
            else:
                ended = True
                cut = (dict(blobs), head, size)
        size += nbytes
        blobs[key] = text
        head = node_key
        blobs[head] = node
    return plain, (blobs, head, size, cut)


async def load_conversation(store: SharedState, head: str | None) -> list[dict[str, Any]]:
    """The messages a head names, read back from the store (for inspection and tests;
    replay never needs it, the workflow rebuilds its own messages). ``store``: a run's
    ``Run.shared``, which decodes the texts through the app's payload hook, or the
    store itself where no hook is set (it returns the texts as stored).

    Raises:
        KeyError: a node or message is missing from the store.
    """
    nodes: list[str] = []
    while head is not None:
        got = await store.blob_get(keys=[head])
        if head not in got:
            raise KeyError(f"conversation node {head} is not in the store")
        node = json.loads(got[head])
        nodes.append(node["msg"])
        head = node["prev"]
    nodes.reverse()
    texts = await store.blob_get(keys=list(dict.fromkeys(nodes)))
    missing = [k for k in nodes if k not in texts]
    if missing:
        raise KeyError(f"message {missing[0]} is not in the store")
    return [json.loads(texts[k]) for k in nodes]
