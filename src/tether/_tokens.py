"""API tokens and loopback checks, shared by ``tether serve`` and a worker's
``/metrics``: needs the standard library only, so the worker (and the CLI that starts
it) does not import ``tether.serve`` to check a scrape.

Tokens come from a file and/or ``TETHER_API_TOKENS``. Both hold entries ``ROLE:TOKEN``
(the file one per line, ``#`` comments allowed; the variable comma-separated), the role
``admin`` (changes) or ``read`` (only looks). A token is known by its SHA-256 digest,
compared in constant time. Without tokens, a server answers only on loopback, and only
requests whose ``Host`` names loopback (``loopback_host_header``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from tether.errors import ConfigError

ROLES = ("admin", "read")
#: How often (seconds, at most) a server looks whether its token file changed.
RELOAD_EVERY = 1.0
ENV_TOKENS = "TETHER_API_TOKENS"
#: Where a token file's changes are logged unless ``Tokens.load`` is given a logger.
_DEFAULT_LOG = "tether.serve"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a role, and the digest naming their token (``""``: open mode)."""

    role: str
    digest: str = ""

    @property
    def can_change(self) -> bool:
        return self.role == "admin"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The configured tokens, by digest. Loaded from a token file (``load``), they
    follow the file: a token removed from it (or added) counts from the next request
    a second or so later, its sessions included, without a restart (before 2026-12-06 a
    removed token, and every session logged in with it, worked until the server was
    restarted). A file changed into one ``load`` refuses (malformed, no token) is not
    taken: the tokens stay as they were, and the log says why (on ``log``: the server's
    own logger, ``tether.serve`` unless told)."""

    def __init__(self, entries: dict[str, str] | None = None, *,
                 log: logging.Logger | None = None) -> None:
        #: digest -> role
        self._roles = {digest(t): role for t, role in (entries or {}).items()}
        self._log = log or logging.getLogger(_DEFAULT_LOG)
        self._file: str | None = None
        self._env: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0

    @property
    def enabled(self) -> bool:
        self._follow()
        return bool(self._roles)

    def by_token(self, token: str) -> Principal | None:
        return self.by_digest(digest(token))

    def by_bearer(self, authorization: str) -> Principal | None:
        """Whose token an ``Authorization: Bearer TOKEN`` header's value gives (None: no
        bearer token, or not a known one)."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.by_token(token.strip())

    def by_digest(self, value: str) -> Principal | None:
        self._follow()
        for known, role in self._roles.items():
            if hmac.compare_digest(known, value):
                return Principal(role, known)
        return None

    @classmethod
    def load(cls, token_file: str | None = None, env: str | None = None, *,
             log: logging.Logger | None = None) -> Tokens:
        """Tokens from ``token_file`` and the ``TETHER_API_TOKENS`` text ``env`` (None:
        the variable's value), following the file; its changes are logged on ``log``.

        Raises:
            ConfigError: an unreadable file or a malformed entry (named, value hidden).
        """
        entries: dict[str, str] = {}
        if token_file is not None:
            try:
                text = Path(token_file).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read token file {token_file}: {exc.strerror}"
                                  ) from None
            for n, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    _add(entries, line, f"{token_file} line {n}")
            if not entries:
                # A secret that was not mounted, a file still to be filled: serving
                # without tokens would open the API to whatever reaches the loopback
                # (a reverse proxy in front, which sends a loopback Host by default).
                raise ConfigError(
                    f"token file {token_file} holds no token (entries admin:TOKEN or "
                    "read:TOKEN, one a line); to serve without tokens, leave out "
                    "--token-file")
        env_text = os.environ.get(ENV_TOKENS, "") if env is None else env
        for i, item in enumerate(env_text.split(","), 1):
            if item.strip():
                _add(entries, item.strip(), f"{ENV_TOKENS} entry {i}")
        tokens = cls(entries, log=log)
        if token_file is not None:
            tokens._file, tokens._env = token_file, env_text
            tokens._stamp = _stamp(token_file)
            tokens._checked = time.monotonic()
        return tokens

    def _follow(self) -> None:
        """Load the token file again if it changed (looked at every ``RELOAD_EVERY``
        seconds at most)."""
        if self._file is None:
            return
        now = time.monotonic()
        if now - self._checked < RELOAD_EVERY:
            return
        self._checked = now
        stamp = _stamp(self._file)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            fresh = Tokens.load(self._file, self._env, log=self._log)
        except ConfigError as exc:
            self._log.warning("token file %s changed, but its tokens were not taken (those "
                        "loaded before still count): %s", self._file, exc)
            return
        if fresh._roles != self._roles:
            self._log.info("token file %s changed: %d token(s) now", self._file,
                     len(fresh._roles))
        self._roles = fresh._roles

    @staticmethod
    def file_exposed(token_file: str) -> str | None:
        """Why ``token_file`` is readable by other users of this machine (its group or
        everyone: any of them could take the admin token), or None when only its owner
        may read it (or it is not a regular file whose mode says so)."""
        try:
            mode = os.stat(token_file).st_mode
        except OSError:
            return None
        if not stat.S_ISREG(mode) or not mode & (stat.S_IRGRP | stat.S_IROTH):
            return None
        who = "everyone" if mode & stat.S_IROTH else "its group"
        return (f"token file {token_file} is readable by {who} (mode {stat.S_IMODE(mode):04o}): "
                f"anyone who reads it may act with its tokens; chmod 600 {token_file}")


def _stamp(path: str) -> tuple[int, int, int] | None:
    """What tells a new version of the file at ``path``: its inode, size and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _add(entries: dict[str, str], entry: str, where: str) -> None:
    role, sep, token = entry.partition(":")
    role, token = role.strip(), token.strip()
    if not sep or role not in ROLES:
        raise ConfigError(f"{where}: expected ROLE:TOKEN with ROLE admin or read")
    if len(token) < 16:
        raise ConfigError(f"{where}: the token is shorter than 16 characters")
    if entries.get(token, role) != role:
        # (the last role given won, admin or read by the order of the lines)
        raise ConfigError(f"{where}: this token is also given as {entries[token]}: "
                          "give each token one role")
    entries[token] = role


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_host_header(value: str) -> bool:
    """Whether a request's ``Host`` names this machine's loopback: ``localhost`` (or a
    name under ``.localhost``, which browsers resolve to loopback themselves) or a
    loopback address, with or without a port. A page that rebinds its own name's DNS
    to 127.0.0.1 (DNS rebinding) sends its own name, and is refused by a server
    without tokens. A request without ``Host`` (HTTP/1.0) is no browser's."""
    host = value.strip().lower()
    if not host:
        return True
    if host.startswith("["):
        name = host[1:host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.rstrip(".")
    return name.endswith(".localhost") or is_loopback(name)


