"""Writing a store's backup to a new file (``tether db backup``), for both backends:
the copy is written beside its destination under another name, made durable, and
only then given its name, which must be new: a backup never overwrites a file (an
older backup, a store), and a failed one leaves nothing under that name."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from tether.errors import ConfigError


def check_target(target: str) -> str:
    """``target`` made absolute, if a backup may be written there.

    Raises: ConfigError (it exists, or its folder does not)."""
    path = os.path.abspath(target)
    if os.path.lexists(path):
        raise ConfigError(
            f"{target} exists already: a backup is written to a new file "
            "(move the old one away or pick another name)"
        )
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise ConfigError(f"no folder {folder} for the backup {target}")
    return path


@contextlib.contextmanager
def partial_file(target: str) -> Iterator[str]:
    """An empty file readable by its owner only (a backup holds every payload), beside
    ``target``, for the copy; given the name ``target`` if the block ends without an
    error (after an fsync of the file and its folder), removed otherwise.

    Raises: ConfigError (``target`` appeared meanwhile)."""
    path = check_target(target)
    folder, name = os.path.split(path)
    partial = os.path.join(folder, f".{name}.partial-{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        yield partial
        _fsync(partial)
        try:
            os.link(partial, path)  # (fails if the name was taken meanwhile)
        except FileExistsError:
            raise ConfigError(
                f"{target} appeared while the backup was written; the backup is not kept"
            ) from None
        _fsync(folder)  # (the new name, durable)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def _fsync(path: str) -> None:
    """Flush ``path`` (a file, or a folder: the names in it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
