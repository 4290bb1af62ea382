"""Fitting a command's table to the terminal it prints on.

On a terminal (and without ``--wide``) ``tether show``, ``runs``, ``approvals``,
``schedules``, ``queues``, ``versions`` and ``workers`` fit their long cells to the terminal's width
(cut, or wrapped under their row; each command's ``--wide`` help says how) instead of
letting every line wrap; into a pipe or a file they print everything, as
they always have, for scripts that read it. A command that answers with a sentence
(``approve``, ``retry``, ``purge``, ``erase``, ...) has it wrapped between words there
(``say``), and so are its ``tether: error:`` and ``tether: warning:`` lines and its
usage errors when stderr is a terminal (``fit_message``). The demo fits its own output
with the same helpers (so they live outside the CLI package, which the demo uses only
through its command line).
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
import unicodedata
from collections.abc import Sequence
from typing import Any

#: The narrowest width fitted to: below it the lines wrap rather than cut to nothing.
MIN_WIDTH = 40
ELLIPSIS = "…"


def wide_help(fitted: str) -> str:
    """The help of a command's ``--wide``: what it prints, and how its output is
    ``fitted`` on a terminal otherwise (each command fits its own way)."""
    return ("print the lines a pipe or a file gets, however wide they are (on a terminal "
            f"the output is otherwise fitted to its width: {fitted})")


#: The help of ``tether show``'s ``--wide``.
WIDE_HELP = wide_help("long ids cut in the middle, long values at the end")
#: ``--wide`` of the tables whose key is a run id (``runs``, ``approvals``: ``key_table``
#: never cuts it). Until 2026-12-06 every command's ``--wide`` had ``WIDE_HELP``: ``runs``,
#: ``approvals`` and ``schedules`` said they cut ids, ``queues`` and ``versions`` values.
RUN_ID_KEPT = ("a run id is never cut: one longer than its column has a line of its own, "
               "above its row")
#: The least width of a table's key column (``columns``); a longer key has a line of its
#: own, above its row.
KEY_MIN = 20


def fit_width(wide: bool, out: Any = None) -> int | None:
    """The width to fit the output to: the terminal's (``$COLUMNS`` first, as
    ``shutil.get_terminal_size`` reads it) when ``out`` is a terminal and ``--wide`` was
    not given; ``None`` (print everything) otherwise."""
    stream = out or sys.stdout
    if wide or not stream.isatty():
        return None
    return max(shutil.get_terminal_size().columns, MIN_WIDTH)


def cells(text: str) -> int:
    """How many columns ``text`` takes on a terminal: 2 for a wide character (CJK, most
    emoji: ``🚀``), none for a combining mark, 1 for the others."""
    if text.isascii():
        return len(text)
    return sum(_cell(char) for char in text)


def _cell(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def pad(text: str, width: int) -> str:
    """``text`` then spaces up to ``width`` columns (``cells``)."""
    return text + " " * max(width - cells(text), 0)


def _head(text: str, width: int) -> str:
    """The longest start of ``text`` in at most ``width`` columns."""
    taken = 0
    for i, char in enumerate(text):
        taken += _cell(char)
        if taken > width:
            return text[:i]
    return text


def cut_end(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns, cut at its end (a message, a payload)."""
    if cells(text) <= width:
        return text
    return _head(text, max(width - 1, 0)) + ELLIPSIS


def cut_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns, cut in its middle (an id or a name: what
    tells two apart is as often at the end, a child's ``.N``, as at the start)."""
    if cells(text) <= width:
        return text
    if width < 3:
        return cut_end(text, width)
    tail = _head(text[::-1], (width - 1) // 2)[::-1]
    return _head(text, width - 1 - cells(tail)) + ELLIPSIS + tail


def pack(chunks: list[str], width: int, sep: str = "  ") -> list[str]:
    """``chunks`` joined by ``sep`` into as few lines of at most ``width`` as they go
    (a chunk longer than a line has one to itself, whole)."""
    lines: list[str] = []
    for chunk in chunks:
        if lines and cells(lines[-1]) + len(sep) + cells(chunk) <= width:
            lines[-1] += sep + chunk
        else:
            lines.append(chunk)
    return lines


def wrap(text: str, width: int, label: str, *, max_lines: int = 8) -> list[str]:
    """``label`` then ``text`` wrapped at word boundaries to ``width``, the lines after
    the first indented under the text, at most ``max_lines`` (the last cut with an
    ellipsis). Long words, such as ids and URLs, are kept whole where they fit a line
    (in text that is not ASCII, whole always: the lines are measured in ``cells``)."""
    indent = " " * min(len(label), width // 3)
    first = text.split(None, 1)[0] if text.strip() else ""
    if not text.isascii():  # (by the columns a wide character takes: ``cells``)
        lines = _words(text, width, label, indent) or [label.rstrip()]
    elif label.strip() and len(label) + len(first) > width >= len(first):
        # The first word (an id) fits a line of its own but not after the label: it
        # goes under the label whole, indented if there is room (textwrap cut it where
        # the label's line ended: "forked from run 01a24b4ed53177e2b3277fcb" /
        # "4cf70e1d ...").
        lines = [label.rstrip(), *textwrap.wrap(
            text, width, initial_indent=indent if len(indent) + len(first) <= width else "",
            subsequent_indent=indent, break_on_hyphens=False)]
    else:
        lines = textwrap.wrap(text, width, initial_indent=label, subsequent_indent=indent,
                              break_on_hyphens=False) or [label.rstrip()]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _head(lines[-1], width - 1) + ELLIPSIS
    return lines


def columns(titles: Sequence[str], rows: list[list[str]], width: int,
            give: Sequence[tuple[int, int]] = (), under: str = "") -> list[str]:
    """``row_lines``' heading and rows' lines, one after the other."""
    head, groups = row_lines(titles, rows, width, give, under)
    return [head, *(line for group in groups for line in group)]


def row_lines(titles: Sequence[str], rows: list[list[str]], width: int,
              give: Sequence[tuple[int, int]] = (), under: str = "",
              ) -> tuple[str, list[list[str]]]:
    """``key_table``, except with ``under`` (a label) the last column is a value to
    read whole (a tool call's arguments, a run id): in its column if every row's fits
    the line whole, else wrapped under its row, after ``under``, when it has one (not
    ``-``)."""
    if not under or sum(max([len(t), *(cells(r[i]) for r in rows)])
                        for i, t in enumerate(titles)) + len(titles) - 1 <= width:
        return key_table(titles, rows, width, give)
    head, groups = key_table(titles[:-1], [r[:-1] for r in rows], width, give)
    for row, group in zip(rows, groups, strict=True):
        if row[-1] not in ("", "-"):
            group += wrap(row[-1], width, f"  {under}: ", max_lines=20)
    return head, groups


def key_table(titles: Sequence[str], rows: list[list[str]], width: int,
              give: Sequence[tuple[int, int]] = ()) -> tuple[str, list[list[str]]]:
    """A table in ``width`` columns, its heading first, whose first column holds a key
    a person copies (a run id, a schedule's name), never cut. The other cells are whole
    if the line has room for them and the keys up to ``KEY_MIN`` long; else the columns
    of ``give`` ((index, least width), in that order) are cut at their end, down to
    their least width or their title's, until it has; if that is not enough, the key
    column narrows to the keys the line still has room for. A key longer than its
    column has a line to itself, its row's cells under it. Returns the heading, and each
    row's lines."""
    widths = [max([len(title), *(cells(row[i]) for row in rows)])
              for i, title in enumerate(titles)]
    room = width - (sum(widths[1:]) + len(widths) - 1)  # what the other cells leave it
    # The column is as wide as the longest key it holds: every key up to KEY_MIN long
    # (the other cells cut for room if they must) and any longer the room has space for.
    widths[0] = max([len(titles[0]), *(cells(row[0]) for row in rows
                                       if cells(row[0]) <= max(room, KEY_MIN))])
    cuts = []
    for i, least in give:
        # (none of a column already narrower than its least: until 2026-12-07 the cut
        # went negative there, and widened it to its least, "WORKFLOW         " over
        # "reconcile", on a line that had no room to spare)
        cut = max(min(widths[0] - room, widths[i] - max(least, len(titles[i]))), 0)
        widths[i] -= cut
        room += cut
        cuts.append((i, cut))
    if widths[0] > room:
        # Cut to their least, the other cells still leave the keys too little room (a
        # narrow terminal, long names): the column holds the keys that fit it, a longer
        # one has a line of its own, and what that frees goes back to the cells cut last.
        widths[0] = max([len(titles[0]), *(cells(row[0]) for row in rows
                                           if cells(row[0]) <= room)])
        for i, cut in reversed(cuts):
            back = max(min(cut, room - widths[0]), 0)
            widths[i] += back
            room -= back
    head = " ".join(f"{t:{w}}" for t, w in zip(titles, widths, strict=True)).rstrip()
    groups = []
    for row in rows:
        shown = [row[0] if cells(row[0]) <= widths[0] else ""]
        shown += [cut_end(cell, w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        line = " ".join(pad(c, w) for c, w in zip(shown, widths, strict=True)).rstrip()
        groups.append([line] if shown[0] else [row[0], line])
    return head, groups


def piped(rows: list[list[str]], least: Sequence[int]) -> list[str]:
    """A table's lines for a pipe, a file or ``--wide`` (``rows``: its heading first):
    every cell whole, each column but the last as wide as its longest cell, or as
    ``least`` (its width of old, by which short cells print as they always have) if
    wider. Fixed widths pushed the rest of a row with a longer cell (a run id, a name)
    out of line with the heading and the other rows."""
    widths = [max(w, *(cells(row[i]) for row in rows)) for i, w in enumerate(least)]
    return [" ".join(pad(cell, w) for cell, w in zip(row, [*widths, 0], strict=True)
                     ).rstrip() for row in rows]


def hang(head: str, text: str, width: int) -> list[str]:
    """``head`` (a row's first cells) then ``text`` (a list, its last cell) wrapped to
    ``width``, its lines after the first under its start while that leaves it half the
    line, else indented by 2 under the row (and all of it there if its first word does
    not fit beside ``head``). Nothing is cut."""
    indent = " " * (cells(head) if cells(head) <= width // 2 else 2)
    lines = _words(text, width, head, indent)
    if lines and cells(lines[0]) > width and cells(lines[0]) > cells(head.rstrip()):
        lines = [head.rstrip(), *_words(text, width, indent, indent)]
    return lines or [head.rstrip()]


def _words(text: str, width: int, first: str, indent: str) -> list[str]:
    """``textwrap.wrap(text, width, initial_indent=first, subsequent_indent=indent)``,
    no word broken, by the columns a line takes on a terminal (``cells``) when the text
    is not ASCII."""
    if text.isascii() and first.isascii():
        return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=indent,
                             break_on_hyphens=False, break_long_words=False)
    lines: list[str] = []
    line, words = first, 0  # (the words on ``line``, after its label or indent)
    for word in text.split():
        # A word goes right after the label or the indent, as textwrap puts it (until
        # 2026-12-07 after a space more: "budget:  1,840 of 5,000 tokens · $0.0008"),
        # and after a space after another word.
        sep = " " if words else ""
        if line.strip() and cells(line) + len(sep) + cells(word) > width:
            lines.append(line)
            line, words = indent + word, 1
        else:
            line, words = line + sep + word, words + 1
    return [*lines, line] if line.strip() else lines


def message_width(stream: Any = None) -> int | None:
    """The width to wrap a message line to on ``stream`` (stderr by default): the
    terminal's (``$COLUMNS`` first, else the size of that terminal itself, which may be
    another than stdout's: ``tether runs > out.txt``) when ``stream`` is one; ``None``
    into a pipe or a file."""
    stream = stream or sys.stderr
    try:
        if not stream.isatty():
            return None
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # (a closed or stand-in stream)
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return max(int(columns), MIN_WIDTH)
    try:
        return max(os.get_terminal_size(fd).columns, MIN_WIDTH)
    except OSError:
        return None


def fit_message(text: str, width: int | None, indent: str = "  ") -> str:
    """A message (``tether: error: ...``) wrapped at word boundaries to ``width``, its
    lines after the first indented by ``indent``, each of its own lines on its own;
    nothing is cut (a word longer than a line, a path or an id, stays whole on a line
    of its own). ``width`` None: ``text`` as it is (a pipe, a file: one line a script
    greps)."""
    if width is None:
        return text
    lines: list[str] = []
    for line in text.split("\n"):
        lines += _words(line, width, "", indent) if cells(line) > width else [line]
    return "\n".join(lines)


def say(text: str, indent: str = "  ") -> None:
    """Print a message line (``purge``'s report, ``approve``'s answer): on a terminal
    wrapped at word boundaries to its width, the lines after the first indented by
    ``indent`` (nothing cut: an id longer than a line stays whole on one of its own);
    into a pipe or a file, as it is."""
    width = fit_width(False)
    if width is None or len(text) <= width:
        print(text)
        return
    print("\n".join(textwrap.wrap(text, width, subsequent_indent=indent,
                                   break_long_words=False, break_on_hyphens=False)))
