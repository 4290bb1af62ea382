"""The public surface: exported names, and the error tree drawn in errors.py."""

from __future__ import annotations

import importlib
import inspect
import pickle
import re
import traceback
import types
from pathlib import Path

import pytest

import tether
import tether.ai
import tether.ai.mcp
import tether.encryption
import tether.errors
import tether.ext
import tether.mcp_tasks
import tether.otel
import tether.testing
import tether.worker
from tether._errors_codec import error_to_dict, step_error

#: The framework integrations, each needing its extra (installed in the dev extra).
pydantic_ai = pytest.importorskip("tether.integrations.pydantic_ai")
openai_agents = pytest.importorskip("tether.integrations.openai_agents")

#: Every public module with an ``__all__``: its names are the public surface.
PUBLIC_MODULES = [tether, tether.ai, tether.ai.mcp, tether.ext, tether.encryption,
                  tether.testing, tether.worker, tether.otel, tether.mcp_tasks, pydantic_ai,
                  openai_agents]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_is_sorted_and_lists_exactly_the_public_names(module: types.ModuleType) -> None:
    """``__all__`` is sorted, every name in it exists, and every public attribute that
    is not a submodule is in it (nothing public by accident, nothing missing)."""
    exported = list(module.__all__)
    assert exported == sorted(exported, key=_isort_style)
    assert len(set(exported)) == len(exported)
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
    home = module.__name__
    defined_here = {  # (pydantic adds parametrized generics as "Request[...]": skipped)
        name for name, value in vars(module).items()
        if not name.startswith("_") and name.isidentifier()
        and (inspect.isclass(value) or inspect.isfunction(value))
        and (value.__module__ == home or value.__module__.startswith(home + "._"))
    }
    assert defined_here - set(exported) == set()


def _isort_style(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then functions (ruff's RUF022 order)."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in (tether.errors, *PUBLIC_MODULES):
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


def _api_reference() -> set[int]:
    """Ids of the objects the API reference (``docs/api/*.md``) renders: every name of a
    module's ``__all__`` where its ``::: module`` directive lists no members, else the
    members it lists."""
    root = Path(__file__).resolve().parents[2] / "docs" / "api"
    shown: set[int] = set()
    for page in sorted(root.glob("*.md")):
        text = page.read_text()
        for match in re.finditer(r"^::: ([\w.]+)\n((?:    .*\n?)*)", text, re.MULTILINE):
            module = importlib.import_module(match.group(1))
            listed = re.search(r"members:\n((?:\s+- \w+\n?)+)", match.group(2))
            names = (re.findall(r"- (\w+)", listed.group(1)) if listed
                     else _public_names(module))
            shown |= {id(getattr(module, name)) for name in names}
    return shown


def _public_names(module: types.ModuleType) -> list[str]:
    """``__all__``, or for a module without one the public classes and functions it
    defines (what mkdocstrings renders)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == (
                module.__name__) and (inspect.isclass(value) or inspect.isfunction(value))]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_public_name_is_in_the_api_reference(module: types.ModuleType) -> None:
    """Each name a public module exports is rendered by some page of docs/api/ (where
    it is defined or re-exported), so the reference misses nothing a user can import."""
    shown = _api_reference()
    missing = [name for name in module.__all__
               if id(getattr(module, name)) not in shown]
    assert missing == [], f"{module.__name__}: not in docs/api/: {missing}"


def test_every_public_error_names_its_public_module() -> None:
    """A public error's ``__module__`` is the public module that exports it, not the
    private one defining it: tracebacks, logs and journaled error types print
    ``tether.ai.BudgetExceeded``, not ``tether.ai._budget.BudgetExceeded``; and pickle
    finds the class by that name."""
    for cls in _error_classes():
        module = cls.__module__
        assert not any(part.startswith("_") for part in module.split(".")), (
            f"{cls.__qualname__} presents the private module {module}")
        assert getattr(importlib.import_module(module), cls.__qualname__) is cls, cls
    exc = tether.ai.BudgetExceeded("over budget", spent_usd=1.0, budget_usd=1.0)
    assert "tether.ai.BudgetExceeded: " in "".join(traceback.format_exception(exc))
    assert error_to_dict(exc)["type"] == "tether.ai.BudgetExceeded"
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is tether.ai.BudgetExceeded and str(again) == str(exc)


@pytest.mark.parametrize(("recorded", "cls"), [
    ("tether.ai.BudgetExceeded", tether.ai.BudgetExceeded),
    ("tether.ai._budget.BudgetExceeded", tether.ai.BudgetExceeded),
    ("tether.ai._errors.ProviderConfigError", tether.ai.ProviderConfigError),
    ("tether.worker._worker.ExitInTask", tether.worker.ExitInTask),
], ids=lambda v: v if isinstance(v, str) else "")
def test_an_error_type_recorded_under_either_path_decodes_to_its_class(
        recorded: str, cls: type[BaseException]) -> None:
    """Journals recorded a public error under its private path before the classes named
    their public module (2026-12-06): such a record still rebuilds an error that the
    workflow's ``except`` of the public class catches, as one under the public path does."""
    err = step_error({"type": recorded, "message": "no", "attempts": 1}, step="s", position=2)
    assert isinstance(err, cls) and isinstance(err, tether.StepError)
    assert err.error_type == recorded
