"""``Codec.encode`` writes ints, finite floats, bools, strs, ``None`` and short lists of
them without the JSON encoder (``_scalar_json``), and everything else with an encoder
built once (``_fast_dumps``): the text must be the encoder's, byte for byte, and every
value the encoder refuses must still be refused the same way."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import uuid
from typing import Any

import pytest

from tether._codec import Codec, _dumps, _fast_dumps, _scalar_json, dumps
from tether.errors import NotSerializable, PayloadTooLarge


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


FAST: list[Any] = [
    0, -5, 2 ** 80, "", "héllo", 'q"uote\\back\nline\x00\x1f\u2028', "日本", None,
    [1], ["a"], [None], [1, "a", None], (3,), ("x", 2), [1, 2, 3, 4], ["\u2029", -1],
    True, False, 1.5, -0.0, 0.1 + 0.2, 1e300, 5e-324, 1e16, [True], [1.0], [7, 0.05],
    (False, None, 2.5, "x"),
]
# Same text through the encoder: not taken by the fast path (other types, longer or
# nested lists, subclasses, empty lists), so they show it declines.
SLOW: list[Any] = [
    [], (), [1, 2, 3, 4, 5], [[1]], {"a": 1}, Level.HIGH, Name("n"), [Level.HIGH],
    [Name("n")], [1.0, 2.0, 3.0, 4.0, 5.0],
]


@dataclasses.dataclass
class Hit:
    url: str
    score: float


# Values the encoder built once must write exactly as ``_dumps`` does.
RICH: list[Any] = [
    *SLOW, {"role": "user", "content": "héllo \u2028 \"q\""}, [{"a": [1, 2.5, None]}],
    Hit("u", 0.5), [Hit("v", 1.0)], dt.datetime(2026, 12, 4, 1, 2, 3),
    uuid.UUID(int=7), frozenset({3}), ("t", ("u",)), {"nested": {"deep": [True]}},
]


@pytest.mark.parametrize("value", FAST)
def test_fast_text_is_the_encoders(value: Any) -> None:
    text = _scalar_json(value)
    assert text is not None
    assert text == _dumps(value)
    assert Codec().encode(value, "v") == text


@pytest.mark.parametrize("value", SLOW)
def test_other_values_go_through_the_encoder(value: Any) -> None:
    assert _scalar_json(value) is None
    assert Codec().encode(value, "v") == _dumps(value)


@pytest.mark.parametrize("value", RICH)
def test_encoder_built_once_writes_the_same_text(value: Any) -> None:
    assert _fast_dumps(value) == _dumps(value)
    assert dumps(value) == _dumps(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1, math.nan],
                                   {"x": math.inf}])
def test_non_finite_floats_are_still_refused(value: Any) -> None:
    if not isinstance(value, dict):
        assert _scalar_json(value) is None
    with pytest.raises(NotSerializable):
        Codec().encode(value, "v")


def test_errors_are_the_encoders_own() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(NotSerializable, match=r"[Cc]ircular"):
        Codec().encode(loop, "v")
    with pytest.raises(NotSerializable, match="object"):
        Codec().encode({"f": object()}, "v")
    with pytest.raises(NotSerializable):
        Codec().encode({(1, 2): "tuple key"}, "v")
    # A failed value leaves nothing behind: the same object encodes once fixed.
    loop.clear()
    assert Codec().encode(loop, "v") == "[]"


@pytest.mark.parametrize("value", ["\ud800", ["ok", "\udfff"]])
def test_lone_surrogates_are_still_refused(value: Any) -> None:
    with pytest.raises(NotSerializable, match="lone surrogate"):
        Codec().encode(value, "v")


def test_too_many_digits_is_refused_as_before() -> None:
    with pytest.raises(NotSerializable):
        Codec().encode(10 ** 5000, "v")
    with pytest.raises(NotSerializable):
        Codec().encode([10 ** 5000], "v")


def test_size_limit_and_hook_apply_to_fast_text() -> None:
    with pytest.raises(PayloadTooLarge):
        Codec(max_payload=10).encode("x" * 20, "v")

    class Hook:
        def encode(self, text: str) -> str:
            return "<" + text + ">"

        def decode(self, text: str) -> str:
            return text[1:-1]

    assert Codec(hook=Hook()).encode([1, "a"], "v") == '<[1,"a"]>'
