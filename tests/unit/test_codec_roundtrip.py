"""``Codec.decode_encoded``: a step's first run returns what its replay will return,
whether or not the text is parsed again."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any

import pytest

from tether._codec import Codec


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Hit:
    url: str


class Hook:
    def encode(self, text: str) -> str:
        return text[::-1]

    def decode(self, text: str) -> str:
        return text[::-1]


CASES: list[tuple[Any, Any]] = [
    (None, None), (7, None), (7, int), (7, float), (True, bool), (False, Any),
    (2.5, None), (-0.0, float), (1e300, None), (2 ** 80, int), ("héllo", str),
    ("red", Color), ("2026-12-03T05:00:00", dt.datetime), (3, Level), (Level.HIGH, None),
    ((1, 2), None), ([1, "a"], list[int]), ({"1": 2}, dict), ({"url": "u"}, Hit),
    (Hit("u"), Hit), (Color.RED, None), ("x", "SomeForwardRef"), (5, int | None),
]


@pytest.mark.parametrize("hook", [None, Hook()])
@pytest.mark.parametrize(("value", "annotation"), CASES)
def test_decode_encoded_is_what_decoding_returns(value: Any, annotation: Any,
                                                 hook: Hook | None) -> None:
    codec = Codec(hook=hook)
    text = codec.encode(value, "result")
    got = codec.decode_encoded(value, text, annotation)
    want = codec.decode(text, annotation)
    assert got == want
    assert type(got) is type(want)
