"""Binary array parameters for the statements over arrays (group-committed appends, ends
of runs, step attempts, run_get_many, run_insert_many), dumped with less client CPU than
psycopg's generic list dumper.

psycopg's list dumper is Python even with its C extension: for every array it scans the
list for the element type, then dumps element by element (0.15 to 0.3 µs each; a journal
append is 13 elements, so 2 to 4 µs of the event loop per step under load). A list
wrapped in one of the classes below says its PostgreSQL type, and its dumper writes
PostgreSQL's binary array format directly: fixed-size numbers without NULLs with one
``struct.pack`` and strided slice copies (~0.03 µs an element), texts in one join
(~0.13 µs). The dumpers are registered for these classes only, so nothing else in the
process is affected.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

_INT = struct.Struct("!i").pack
_NULL = _INT(-1)
_HEADER = struct.Struct("!iiIii").pack
_EMPTY = struct.Struct("!iiI").pack


class TextArray(list[str | None]):
    """A list sent as ``text[]`` (binary)."""


class Int4Array(list[int]):
    """A list sent as ``integer[]`` (binary)."""


class Int8Array(list[int]):
    """A list sent as ``bigint[]`` (binary)."""


class Float8Array(list[float | None]):
    """A list sent as ``float8[]`` (binary)."""


def _text(items: list[Any], elem_oid: int) -> bytes:
    parts: list[bytes] = [b""]
    append = parts.append
    has_null = 0
    for s in items:
        if s is None:
            append(_NULL)
            has_null = 1
        else:
            b = s.encode()
            append(_INT(len(b)))
            append(b)
    if not items:
        return _EMPTY(0, 0, elem_oid)
    parts[0] = _HEADER(1, has_null, elem_oid, len(items), 1)
    return b"".join(parts)


def _fixed(items: list[Any], code: str, width: int, elem_oid: int) -> bytes:
    try:
        return _pack_fixed(items, code, width, elem_oid)
    except struct.error as exc:  # out of range, not a number: the server's refusal
        raise psycopg.DataError(f"cannot send {items!r:.80} as an array: {exc}") from None


def _pack_fixed(items: list[Any], code: str, width: int, elem_oid: int) -> bytes:
    n = len(items)
    if not n:
        return _EMPTY(0, 0, elem_oid)
    if None in items:
        parts = [_HEADER(1, 1, elem_oid, n, 1)]
        one = struct.Struct(f"!i{code}").pack
        for v in items:
            parts.append(_NULL if v is None else one(width, v))
        return b"".join(parts)
    data = struct.pack(f"!{n}{code}", *items)
    step = 4 + width
    out = bytearray(step * n)
    out[3::step] = bytes((width,)) * n  # each element's length: 0, 0, 0, width
    for k in range(width):  # each byte of every value, in one C loop per byte
        out[4 + k::step] = data[k::width]
    return _HEADER(1, 0, elem_oid, n, 1) + out


class _TextArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1009  # text[]

    def dump(self, obj: Any) -> bytes:
        return _text(obj, 25)


class _Int4ArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1007  # integer[]

    def dump(self, obj: Any) -> bytes:
        return _fixed(obj, "i", 4, 23)


class _Int8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1016  # bigint[]

    def dump(self, obj: Any) -> bytes:
        return _fixed(obj, "q", 8, 20)


class _Float8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1022  # float8[]

    def dump(self, obj: Any) -> bytes:
        return _fixed(obj, "d", 8, 701)


#: The same encodings by PostgreSQL type, for a statement sent through libpq directly
#: (``_raw.Prepared``): texts are sent as UTF-8, as the dumpers send them.
ARRAY_ENCODERS: dict[str, Callable[[list[Any]], bytes]] = {
    "text[]": partial(_text, elem_oid=25),
    "integer[]": partial(_fixed, code="i", width=4, elem_oid=23),
    "bigint[]": partial(_fixed, code="q", width=8, elem_oid=20),
    "float8[]": partial(_fixed, code="d", width=8, elem_oid=701),
}

psycopg.adapters.register_dumper(TextArray, _TextArrayDumper)
psycopg.adapters.register_dumper(Int4Array, _Int4ArrayDumper)
psycopg.adapters.register_dumper(Int8Array, _Int8ArrayDumper)
psycopg.adapters.register_dumper(Float8Array, _Float8ArrayDumper)
