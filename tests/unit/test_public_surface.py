"""The public surface: exported names, and the error tree drawn in errors.py."""

from __future__ import annotations

import inspect
import re
import types

import pytest

import tether
import tether.ai
import tether.ai.mcp
import tether.encryption
import tether.errors
import tether.ext


@pytest.mark.parametrize("module", [tether, tether.ai, tether.ai.mcp, tether.ext])
def test_all_is_sorted_and_lists_exactly_the_public_names(module: types.ModuleType) -> None:
    """``__all__`` is sorted, every name in it exists, and every public attribute that
    is not a submodule is in it (nothing public by accident, nothing missing)."""
    exported = list(module.__all__)
    assert exported == sorted(exported, key=_isort_style)
    assert len(set(exported)) == len(exported)
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
    home = module.__name__
    defined_here = {
        name for name, value in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
        and (value.__module__ == home or value.__module__.startswith(home + "._"))
    }
    assert defined_here - set(exported) == set()


def _isort_style(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then functions (ruff's RUF022 order)."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in (tether.errors, tether, tether.ai, tether.ai.mcp, tether.encryption):
        for value in vars(module).values():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__.startswith("tether")
                    and not value.__name__.startswith("_")):
                found[value.__name__] = value
    return list(found.values())


def test_every_public_error_is_a_tether_error_drawn_in_the_tree() -> None:
    """Each public exception class derives from TetherError and appears in the tree
    drawn in the docstring of tether.errors."""
    tree = tether.errors.__doc__ or ""
    classes = _error_classes()
    assert len(classes) >= 30
    for cls in classes:
        assert issubclass(cls, tether.TetherError), cls
        assert re.search(rf"[ .]{cls.__name__}\b", tree), (
            f"{cls.__name__} is not drawn in tether.errors' docstring")


def test_every_core_error_is_exported_from_tether() -> None:
    """The errors of tether.errors are all importable from ``tether``."""
    for name, value in vars(tether.errors).items():
        if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == (
                "tether.errors"):
            assert name in tether.__all__, name


def test_bad_arguments_raise_config_error_which_is_a_value_error() -> None:
    """The one rule for bad arguments: ConfigError, also a ValueError, saying which."""
    cases = [
        lambda: tether.RetryPolicy(backoff=0.5),
        lambda: tether.RateLimit("", 1),
        lambda: tether.sleep("soon"),  # type: ignore[arg-type]
        lambda: tether.App().worker(concurrency=0),
    ]
    for case in cases:
        with pytest.raises(tether.ConfigError) as info:
            case()
        assert isinstance(info.value, ValueError)
        assert "\n" not in str(info.value)
