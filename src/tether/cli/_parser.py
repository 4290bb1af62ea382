"""The ``tether`` command's parsers: argparse's, each keeping its own record of what it
was built with (``Options``), so that the command reads that record rather than
argparse's private attributes: the long options that take one value
(``Options.value_options``, ``Options.long_options``) and the sub-commands
(``Options.commands``), at any depth (``tether db copy``, ``tether schedules pause``).

Every parser of the command is an ``Options``, and so is every parser given to one as a
parent (``parents=[common]``): argparse copies a parent's options without calling
``add_argument``, so a parent of another kind would leave its options out of the
record, and is refused (``TypeError``) when the command is built.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Protocol


class Container(Protocol):
    """What takes an argument: an ``Options`` or one of its ``Group``s."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action: ...


def _record(options: Options, action: argparse.Action) -> None:
    """Note ``action`` (as ``add_argument`` returned it) in ``options``'s record."""
    names = [name for name in action.option_strings if name.startswith("--")]
    options.long_options.update(names)
    if action.nargs is None:  # (one value: a plain option, --status repeated)
        options.value_options.update(names)


class Group:
    """An argument group of an ``Options`` (``add_argument_group``,
    ``add_mutually_exclusive_group``): argparse's, whose options go into the parser's
    record as they are added."""

    def __init__(self, group: Any, options: Options) -> None:
        self._group = group
        self._options = options

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action: argparse.Action = self._group.add_argument(*args, **kwargs)
        _record(self._options, action)
        return action

    def __getattr__(self, name: str) -> Any:
        # (the rest is the group's: argparse keeps one it made for its own use, such as
        # add_subparsers(title=...)'s, and goes on using it)
        return getattr(self._group, name)


class Commands:
    """The sub-commands of an ``Options`` (``add_subparsers``): argparse's sub-parsers,
    each recorded under its name and aliases as it is added. A sub-command without a
    description of its own gets its ``help`` as one, a sentence (``tether show --help``
    said nowhere what the command does)."""

    def __init__(self, action: Any, dest: str | None) -> None:
        self._action = action
        #: The namespace attribute that names the sub-command given (None: none).
        self.dest = dest
        #: Each sub-command's parser, by its name and by each alias.
        self.parsers: dict[str, Options] = {}

    def add_parser(self, name: str, **kwargs: Any) -> Options:
        text = kwargs.get("help")
        if kwargs.get("description") is None and isinstance(text, str) \
                and text and text != argparse.SUPPRESS:
            kwargs["description"] = text[0].upper() + text[1:] + (
                "" if text.endswith(".") else ".")
        parser = self._action.add_parser(name, **kwargs)
        if not isinstance(parser, Options):
            raise TypeError(f"the parser of sub-command {name!r} must be an Options, not "
                            f"{type(parser).__name__} (parser_class=)")
        for called in (name, *kwargs.get("aliases", ())):
            self.parsers[called] = parser
        return parser


class Options(argparse.ArgumentParser):
    """An ``ArgumentParser`` that records its long options that take one value
    (``value_options``), all its long options (``long_options``), those of its parents
    included, and its sub-commands (``commands``)."""

    def __init__(self, *, parents: Sequence[argparse.ArgumentParser] = (),
                 **kwargs: Any) -> None:
        #: The long options that take one value (``--older-than``; not a flag, nor
        #: one of ``nargs=`` another count).
        self.value_options: set[str] = set()
        #: Every long option (for an abbreviation: ``--older`` for ``--older-than``).
        self.long_options: set[str] = set()
        #: The sub-commands (``add_subparsers``), or None.
        self.commands: Commands | None = None
        # (argparse makes groups of its own while it builds the parser, and keeps using
        # them: those stay its own, not ``Group``s)
        self._building = True
        for parent in parents:
            if not isinstance(parent, Options):
                raise TypeError(f"a parent parser must be an Options, not "
                                f"{type(parent).__name__}: its options would be left out "
                                "of the record")
        super().__init__(parents=list(parents), **kwargs)
        self._building = False
        for parent in parents:
            assert isinstance(parent, Options)
            self.value_options |= parent.value_options
            self.long_options |= parent.long_options

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        _record(self, action)
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        return group if self._building else Group(group, self)

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        group = super().add_mutually_exclusive_group(**kwargs)
        return group if self._building else Group(group, self)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", type(self))
        self.commands = Commands(super().add_subparsers(**kwargs), kwargs.get("dest"))
        return self.commands

    def option_taking_value(self, word: str) -> bool:
        """Whether ``word`` names one of this parser's long options that take one value,
        in full or abbreviated as argparse takes it (a prefix of no other long
        option)."""
        if word in self.value_options:
            return True
        if not word.startswith("--") or word in self.long_options or "=" in word:
            return False
        found = [name for name in self.long_options if name.startswith(word)]
        return len(found) == 1 and found[0] in self.value_options
