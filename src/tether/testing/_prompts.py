"""What changed in a durable LLM call's prompt, for the replay check's ``compare_args``.

An LLM call's journaled arguments name its conversation by the digest of the last node
of a hash chain (``tether.ai._messages``: each node ``{"msg": <message digest>, "prev":
<node digest>}``, each message stored under the digest of its canonical JSON), so a
changed prompt shows in the arguments as one digest against another. The texts are
content-addressed blobs: the code's side hands its own to the check
(``ext.Run.argument_texts``); the recorded side is in the store the run ran on, and in
the history file ``tether export`` writes (its ``texts``; a file written before has
none). With both, this says which messages differ and how; with the code's side only,
what the chain still tells (messages added at the end).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

#: ``Store.blob_get``: the stored texts of these digests (those it has).
BlobGet = Callable[..., Awaitable[dict[str, str]]]

_SNIPPET = 48


def with_texts(texts: Mapping[str, str], blob_get: BlobGet | None) -> BlobGet | None:
    """A ``blob_get`` that reads ``texts`` (a history file's) first, then the store's
    ``blob_get`` if any: the recorded prompts of a run checked from its file."""
    if not texts:
        return blob_get

    async def get(*, keys: list[str]) -> dict[str, str]:
        found = {k: texts[k] for k in keys if k in texts}
        rest = [k for k in keys if k not in found]
        if rest and blob_get is not None:
            found.update(await blob_get(keys=rest))
        return found

    return get


def call_refs(args: Any) -> dict[str, Any] | None:
    """An LLM call's journaled references (its step's one argument: ``[refs]``)."""
    if isinstance(args, list) and len(args) == 1:
        args = args[0]
    if isinstance(args, dict) and isinstance(args.get("messages"), (str, type(None))):
        return args
    return None


def is_prompt_change(name: str, recorded: Any, requested: Any) -> bool:
    """An LLM call's arguments (``llm:...``) whose conversation differs."""
    old, new = call_refs(recorded), call_refs(requested)
    return (name.startswith("llm:") and old is not None and new is not None
            and old.get("messages") != new.get("messages"))


async def _chain(head: str | None, texts: Mapping[str, str],
                 blob_get: BlobGet | None) -> list[str] | None:
    """The message texts of the conversation ``head`` names, first to last, or None
    when a node or message is in neither ``texts`` nor the store."""
    found = dict(texts)

    async def text(key: str) -> str | None:
        if key not in found and blob_get is not None:
            found.update(await blob_get(keys=[key]))
        return found.get(key)

    keys: list[str] = []
    while head is not None:
        node_text = await text(head)
        if node_text is None:
            return None
        try:
            node = json.loads(node_text)
            keys.append(str(node["msg"]))
            head = node["prev"]
        except (ValueError, KeyError, TypeError):
            return None
        if len(keys) > 100_000:
            return None
    keys.reverse()
    missing = [k for k in dict.fromkeys(keys) if k not in found]
    if missing and blob_get is not None:  # (the messages in one read, not one apiece)
        found.update(await blob_get(keys=missing))
    if any(k not in found for k in keys):
        return None
    return [found[k] for k in keys]


def _nodes(head: str | None, texts: Mapping[str, str]) -> list[str]:
    """The node digests of a conversation whose texts are all in ``texts``, first to
    last (the head of each prefix)."""
    out: list[str] = []
    while head is not None and head in texts:
        out.append(head)
        try:
            head = json.loads(texts[head])["prev"]
        except (ValueError, KeyError, TypeError):
            return []
    return out[::-1]


def _label(text: str) -> tuple[str, str]:
    """A message's role and its content as text."""
    try:
        message = json.loads(text)
    except ValueError:
        return "?", text
    if not isinstance(message, dict):
        return "?", text
    content = message.get("content")
    body = content if isinstance(content, str) else json.dumps(
        {k: v for k, v in message.items() if k != "role"}, ensure_ascii=False,
        sort_keys=True)
    return str(message.get("role", "?")), body


def _snippets(old: str, new: str) -> tuple[str, str]:
    """The two texts around where they first differ, cut to a readable length."""
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    end = 0
    while (end < min(len(old), len(new)) - start
           and old[len(old) - 1 - end] == new[len(new) - 1 - end]):
        end += 1
    lead = max(start - 16, 0)

    def cut(text: str) -> str:
        stop = max(len(text) - end + 16, start + 1)
        part = text[lead:stop]
        if len(part) > _SNIPPET:
            part = part[:_SNIPPET - 1] + "…"
        return ("…" if lead else "") + part + ("…" if stop < len(text) else "")

    return cut(old), cut(new)


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _describe(old: list[str], new: list[str]) -> str:
    parts: list[str] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        if op == "replace" and i2 - i1 == j2 - j1:
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                (o_role, o_body), (n_role, n_body) = _label(old[i]), _label(new[j])
                a, b = _snippets(o_body, n_body)
                role = n_role if o_role == n_role else f"{o_role} -> {n_role}"
                parts.append(f"message {j + 1} of {len(new)} differs ({role}: "
                             f"{json.dumps(a, ensure_ascii=False)} -> "
                             f"{json.dumps(b, ensure_ascii=False)})")
            continue
        if i2 > i1:
            parts.append(f"recorded message{'s' if i2 - i1 > 1 else ''} "
                         f"{_span(i1, i2)} of {len(old)} removed")
        if j2 > j1:
            parts.append(f"message{'s' if j2 - j1 > 1 else ''} {_span(j1, j2)} of {len(new)} "
                         "added")
    return "; ".join(parts) or "the same messages, encoded otherwise"


def _span(a: int, b: int) -> str:
    return str(a + 1) if b - a == 1 else f"{a + 1}-{b}"


async def describe_prompt_change(recorded_args: Any, requested_args: Any,
                                 texts: Mapping[str, str],
                                 blob_get: BlobGet | None) -> str:
    """One line on how the code's prompt differs from the recorded one: "the prompt
    changed: message 2 of 3 differs (user: "…the report" -> "…the report in French")",
    or, without the recorded texts, what the digests still tell (``is_prompt_change``
    holds)."""
    recorded, requested = call_refs(recorded_args) or {}, call_refs(requested_args) or {}
    old_n, new_n = recorded.get("count"), requested.get("count")
    new = await _chain(requested.get("messages"), texts, None)
    old = await _chain(recorded.get("messages"), texts, blob_get)
    if old is not None and new is not None:
        return "the prompt changed: " + _describe(old, new)
    counts = (f"{_plural(old_n, 'message')} recorded, {new_n} now"
              if isinstance(old_n, int) and isinstance(new_n, int) else "")
    nodes = _nodes(requested.get("messages"), texts)
    if recorded.get("messages") in nodes:
        k = nodes.index(recorded["messages"]) + 1
        return (f"the prompt changed: the recorded {_plural(k, 'message')} come first, "
                f"{_plural(len(nodes) - k, 'message')} added after them")
    where = ("the recorded messages are not in the store" if blob_get is not None
             else "a history file holds no prompts: check against the store "
                  "(tether replay --workflow NAME --db URL) to see which message differs")
    return (f"the prompt changed ({counts}{'; ' if counts else ''}the journal keeps its "
            f"digest only, and {where})")


async def _tool_specs(ref: Any, texts: Mapping[str, str],
                      blob_get: BlobGet | None) -> dict[str, dict[str, Any]] | None:
    """The tools a call's ``tools`` reference names, by name (``{}`` for none), or None
    when its text is in neither ``texts`` nor the store, or is not a list of tools."""
    if ref is None:
        return {}
    if not isinstance(ref, str):
        return None
    text = texts.get(ref)
    if text is None and blob_get is not None:
        text = (await blob_get(keys=[ref])).get(ref)
    if text is None:
        return None
    try:
        specs = json.loads(text)
        return {str(t["name"]): t for t in specs}
    except (ValueError, KeyError, TypeError):
        return None


def _names(names: list[str]) -> str:
    return ", ".join(json.dumps(n, ensure_ascii=False) for n in names)


async def describe_tools_change(recorded_args: Any, requested_args: Any,
                                texts: Mapping[str, str],
                                blob_get: BlobGet | None) -> str | None:
    """How the tools of an LLM call differ from the recorded ones, in tool names
    ("the tools changed: "refund" removed; "lookup_order" changed (parameters)"), or
    None when they do not differ or the recorded tools cannot be read (the journal
    keeps their digest only: the text is in the store, and in an exported history's
    ``texts``). ``texts`` holds the code's side, ``blob_get`` reads the recorded one."""
    recorded, requested = call_refs(recorded_args), call_refs(requested_args)
    if recorded is None or requested is None or recorded.get("tools") == requested.get(
            "tools"):
        return None
    new = await _tool_specs(requested.get("tools"), texts, None)
    old = await _tool_specs(recorded.get("tools"), {}, blob_get)
    if old is None or new is None:
        return None
    parts: list[str] = []
    added = [n for n in new if n not in old]
    removed = [n for n in old if n not in new]
    if added:
        parts.append(f"{_names(added)} added")
    if removed:
        parts.append(f"{_names(removed)} removed")
    for name in (n for n in new if n in old and new[n] != old[n]):
        what = [k for k in ("description", "parameters") if new[name].get(k) != old[name].get(k)]
        parts.append(f"{_names([name])} changed ({' and '.join(what) or 'its spec'})")
    if not parts and list(new) != list(old):
        parts.append(f"reordered ({_names(list(old))} -> {_names(list(new))})")
    return "the tools changed: " + ("; ".join(parts) or "the same tools, encoded otherwise")
