"""Fitting a command's table to the terminal it prints on.

On a terminal (and without ``--wide``) ``tether show`` and ``tether runs`` cut their
long cells to the terminal's width instead of letting every line wrap; into a pipe or
a file they print everything, as they always have, for scripts that read it.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from typing import Any

#: The narrowest width fitted to: below it the lines wrap rather than cut to nothing.
MIN_WIDTH = 40
ELLIPSIS = "…"


def fit_width(wide: bool, out: Any = None) -> int | None:
    """The width to fit the output to: the terminal's (``$COLUMNS`` first, as
    ``shutil.get_terminal_size`` reads it) when ``out`` is a terminal and ``--wide`` was
    not given; ``None`` (print everything) otherwise."""
    stream = out or sys.stdout
    if wide or not stream.isatty():
        return None
    return max(shutil.get_terminal_size().columns, MIN_WIDTH)


def cut_end(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut at its end (a message, a payload)."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + ELLIPSIS


def cut_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut in its middle (an id or a name: what
    tells two apart is as often at the end, a child's ``.N``, as at the start)."""
    if len(text) <= width:
        return text
    if width < 3:
        return cut_end(text, width)
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + ELLIPSIS + text[len(text) - tail:]


def pack(chunks: list[str], width: int, sep: str = "  ") -> list[str]:
    """``chunks`` joined by ``sep`` into as few lines of at most ``width`` as they go
    (a chunk longer than a line has one to itself, whole)."""
    lines: list[str] = []
    for chunk in chunks:
        if lines and len(lines[-1]) + len(sep) + len(chunk) <= width:
            lines[-1] += sep + chunk
        else:
            lines.append(chunk)
    return lines


def wrap(text: str, width: int, label: str, *, max_lines: int = 8) -> list[str]:
    """``label`` then ``text`` wrapped at word boundaries to ``width``, the lines after
    the first indented under the text, at most ``max_lines`` (the last cut with an
    ellipsis). Long words, such as ids and URLs, are kept whole where they fit a line."""
    indent = " " * min(len(label), width // 3)
    lines = textwrap.wrap(text, width, initial_indent=label, subsequent_indent=indent,
                          break_on_hyphens=False) or [label.rstrip()]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1] + ELLIPSIS
    return lines
