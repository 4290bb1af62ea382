"""A journaled error's traceback, bounded in size: what of a long chain it keeps."""

from __future__ import annotations

from tether._errors_codec import _MAX_TB, error_to_dict
from tether._show import error_origin


def fetch(url: str) -> None:
    raise ConnectionError(f"no route to {url}")


def chained() -> BaseException:
    """A root cause raised in ``fetch``, re-raised from an outer error whose own
    traceback is long (a framework's deep stack, here a long message)."""
    try:
        try:
            fetch("example.org")
        except ConnectionError as exc:
            raise RuntimeError("step failed: " + "x" * 3 * _MAX_TB) from exc
    except RuntimeError as outer:
        return outer
    raise AssertionError("not raised")


def test_a_long_chain_keeps_the_end_of_each_of_its_tracebacks() -> None:
    """Bounded, the traceback keeps the end of the root cause's traceback (its raise
    and its error's line) and of the outer one, each under its head line, so the
    faces still say where the code went wrong (``at FILE, line N``). It kept the end
    of the whole text, and the root cause was lost behind a long outer traceback."""
    tb = error_to_dict(chained())["traceback"]
    assert len(tb) <= _MAX_TB + 8
    assert tb.count("Traceback (most recent call last):\n") == 2
    assert "ConnectionError: no route to example.org\n" in tb
    assert "The above exception was the direct cause of the following exception" in tb
    assert tb.rstrip().endswith("x" * 100)
    line = fetch.__code__.co_firstlineno + 1
    assert error_origin({"traceback": tb}) == (
        f'{__file__}, line {line}, in fetch: raise ConnectionError(f"no route to {{url}}")')


def test_a_short_traceback_is_kept_whole() -> None:
    try:
        fetch("a")
    except ConnectionError as exc:
        tb = error_to_dict(exc)["traceback"]
    assert tb.startswith("Traceback (most recent call last):\n") and "…" not in tb
