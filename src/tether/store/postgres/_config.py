"""What a ``postgresql://`` URL says: how to connect, where the tables live, and how to
translate psycopg's errors into Tether's at the boundary."""

from __future__ import annotations

import contextlib
import getpass
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tether.errors import ConfigError, StoreError, StoreRefused, StoreUnavailable

DEFAULT_SCHEMA = "tether"
#: Seconds an operation may wait on its connection for the server's answer (a batch of
#: journal appends, a claim, a read) before the connection is dropped and the operation
#: raises StoreUnavailable: the client-side deadline that finds a server that accepts
#: connections but never answers (see ``_deadline``).
DEFAULT_QUERY_TIMEOUT = 30.0
#: Store options a ``postgresql://`` URL may carry as query parameters, besides
#: ``schema``; they are removed before connecting (libpq would refuse them). Each is
#: also an argument of ``PostgresStore``, read as: seconds (``seconds``) or a count at
#: least this large (``count``).
STORE_OPTIONS: dict[str, str | int] = {
    "query_timeout": "seconds",
    "pool_min": 0,
    "pool_max": 1,
    "pool_timeout": "seconds",
    "pool_max_idle": "seconds",
}
_STORE_PARAMS = ("schema", *STORE_OPTIONS)
#: Lower case, so that the name needs no quoting anywhere; short enough that the
#: notification channel (``<schema>_wake``) fits PostgreSQL's 63-byte identifiers.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,57}$")

#: libpq TCP settings added unless the URL sets them: a connection whose peer vanished
#: without a reset (partition, dead host) is given up after about a minute instead of the
#: kernel's ~15 minutes of retransmissions (or forever, when idle). Keepalive probes start
#: after 30 s of silence, 3 unanswered probes 10 s apart end the connection;
#: ``tcp_user_timeout`` (ms) ends one whose sent data stays unacknowledged for 60 s.
#: libpq ignores them on Unix sockets and where the OS lacks the socket option.
TCP_DEFAULTS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}


@dataclass(frozen=True, slots=True)
class PgConfig:
    """A parsed store URL."""

    #: What psycopg connects with (the URL less ``schema``, plus our defaults).
    conninfo: str
    host: str
    port: str
    dbname: str
    schema: str
    #: The store options (``STORE_OPTIONS``) the URL gives, read: ``?pool_max=20`` is
    #: ``{"pool_max": 20}``.
    options: Mapping[str, float] = field(default_factory=dict)

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this schema (NOTIFY is per database already)."""
        return f"{self.schema}_wake"

    @property
    def where(self) -> str:
        """``host:port/dbname``, for messages."""
        return f"{self.host}:{self.port}/{self.dbname}"


def parse_url(url: str, *, schema: str | None, connect_timeout: float,
              application_name: str = "tether") -> PgConfig:
    """Split ``?schema=NAME`` and the store options (``STORE_OPTIONS``:
    ``?query_timeout=SECONDS``, ``?pool_max=N``...) off ``url`` and add connection
    defaults the URL lacks (``connect_timeout``, ``application_name``,
    :data:`TCP_DEFAULTS`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"not a PostgreSQL URL: {url!r}")
    params = parse_qsl(parts.query, keep_blank_values=True)
    rest = [(k, v) for k, v in params if k not in _STORE_PARAMS]
    given: dict[str, list[str]] = {}
    for k, v in params:
        if k in _STORE_PARAMS:
            given.setdefault(k, []).append(v)
    for key, values in given.items():
        if len(set(values)) > 1:
            raise ConfigError(f"the URL gives {key} {len(values)} times "
                              f"({', '.join(map(repr, values))}); give it once")
    in_url = given.get("schema", [])
    options = {key: option(key, values[-1]) for key, values in given.items()
               if key != "schema"}
    if in_url and schema is not None and in_url[-1] != schema:
        raise ConfigError(
            f"the URL names schema {in_url[-1]!r} and the schema option {schema!r}; pick one")
    name = schema if schema is not None else (in_url[-1] if in_url else DEFAULT_SCHEMA)
    if not _SCHEMA_NAME.match(name):
        raise ConfigError(
            f"schema name {name!r} is not supported: use 1-58 characters of a-z, 0-9 and _, "
            "not starting with a digit")
    # libpq decodes %XX but not "+": keep spaces as %20.
    bare = urlunsplit(parts._replace(scheme="postgresql",
                                     query=urlencode(rest, quote_via=quote)))
    try:
        libpq = conninfo_to_dict(bare)
    except psycopg.ProgrammingError as exc:
        why = _first_line(exc)
        if "invalid URI query parameter" in why:
            why += (" (neither a libpq connection parameter nor a store option: "
                    f"{', '.join(_STORE_PARAMS)})")
        raise ConfigError(f"bad PostgreSQL URL {url!r}: {why}") from None
    extra: dict[str, object] = {}
    if "connect_timeout" not in libpq:
        # libpq takes whole seconds; 0 would mean "wait forever".
        extra["connect_timeout"] = max(1, round(connect_timeout))
    if "application_name" not in libpq:
        extra["application_name"] = application_name
    extra.update((k, v) for k, v in TCP_DEFAULTS.items() if k not in libpq)
    host = str(libpq.get("host") or libpq.get("hostaddr") or "localhost")
    return PgConfig(
        conninfo=make_conninfo(bare, **extra),  # type: ignore[arg-type]
        host=host,
        port=str(libpq.get("port") or "5432"),
        dbname=str(libpq.get("dbname") or libpq.get("user") or ""),
        schema=name,
        options=options,
    )


def option(name: str, value: object) -> float:
    """Store option ``name`` (of ``STORE_OPTIONS``) read from ``value`` (a URL's text or
    the store's argument).

    Raises: ConfigError naming the option and the value."""
    kind = STORE_OPTIONS[name]
    if kind == "seconds":
        return seconds(value, name)
    assert isinstance(kind, int)
    return count(value, name, kind)


def count(value: object, what: str, least: int) -> int:
    """``value`` as a whole number of at least ``least`` (a URL's text or an int)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    if number is None or number < least:
        raise ConfigError(f"{what} must be a whole number of at least {least}, "
                          f"not {value!r}")
    return number


def pick(name: str, argument: object, cfg: PgConfig, default: float) -> float:
    """The value of store option ``name``: the store's ``argument`` if given (not
    ``None``), else the URL's, else ``default``. Both given and different: ConfigError
    (which one meant it cannot be known); the same value twice is fine."""
    in_url = cfg.options.get(name)
    if argument is None:
        return default if in_url is None else in_url
    value = option(name, argument)
    if in_url is not None and in_url != value:
        raise ConfigError(f"the URL says {name}={in_url:g} and the {name} option "
                          f"{value:g}; pick one")
    return value


def seconds(value: object, what: str) -> float:
    """``value`` as a positive, finite number of seconds (a URL's text or a number)."""
    try:
        number = math.nan if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"{what} must be a positive, finite number of seconds, "
                          f"not {value!r}")
    return number


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect_reason(exc: BaseException) -> str:
    """The short cause of a failed connection, e.g. ``Connection refused``."""
    line = _first_line(exc)
    # libpq: 'connection failed: connection to server at "h", port p failed: <reason>',
    # the server's own answer after "FATAL:  " (a word for the server's log, not ours)
    reason = line.rsplit(" failed: ", 1)[-1].strip() or line
    return re.sub(r"^FATAL:\s+", "", reason)


#: The server's answers to a connection that are its configuration, not an outage:
#: what to fix for each (libpq's message, after ``FATAL:``).
_REFUSALS = (
    (re.compile(r'database "(?P<name>.*)" does not exist'),
     "create that database, or correct the database name in the URL"),
    (re.compile(r'role "(?P<name>.*)" does not exist'),
     "create that role, or correct the user name in the URL"),
    (re.compile(r'password authentication failed for user "(?P<name>.*)"'),
     "correct the password (the URL's, PGPASSWORD or ~/.pgpass) or the user name"),
    (re.compile(r"fe_sendauth: no password supplied"),
     "the server asks this role for a password: give it in the URL "
     "(postgresql://USER:PASSWORD@HOST/DB), PGPASSWORD or ~/.pgpass"),
    (re.compile(r'(no pg_hba\.conf entry|pg_hba\.conf rejects connection) for host '
                r'"[^"]*", user "[^"]*", database "[^"]*"'),
     "allow this host, user and database in the server's pg_hba.conf, or connect as "
     "one it allows"),
)


def refusal(reason: str) -> str | None:
    """What the server's answer ``reason`` (``connect_reason``) says when it refused
    the connection for a reason of configuration (a database or role that does not
    exist, a failed password): its words and the fix; None for any other reason."""
    for pattern, fix in _REFUSALS:
        found = pattern.search(reason)
        if found is not None:
            return f"{found[0]} (a configuration problem, not an outage: {fix})"
    return None


def refused(where: str, reason: str) -> StoreRefused | None:
    """The StoreRefused for the server's answer ``reason``, if it was a refusal."""
    said = refusal(reason)
    return None if said is None else StoreRefused(
        f"PostgreSQL at {where} refused the connection: {said}")


def unavailable(cfg: PgConfig, exc: BaseException) -> StoreUnavailable:
    """A one-line StoreUnavailable naming the server (a StoreRefused when the server
    refused the connection for a reason of configuration)."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        why = f"no connection within the pool timeout ({_first_line(exc)})"
    else:
        why = connect_reason(exc)
        refusal_ = refused(f"{cfg.host}:{cfg.port}", why)
        if refusal_ is not None:
            return refusal_
        why += _maybe_the_server(exc, why)
    return StoreUnavailable(f"PostgreSQL at {cfg.host}:{cfg.port} is unavailable: {why}")


def _maybe_the_server(exc: BaseException, why: str) -> str:
    """What else than an outage may have cut an operation, for the operator reading the
    message: a statement that waited past its deadline on a server that is up (a lock
    another session holds read as "no answer" alone, like a dead network), the
    server's own timeouts (SQLSTATE 57014, 55P03), or its disk full (53100, which
    read as "unavailable: could not extend file ...")."""
    if isinstance(exc, NoAnswer):
        return ("; the server is down or hung, or the statement waited that long (on a "
                "lock another session holds, or running long): raise query_timeout if "
                "such waits are normal")
    if isinstance(exc, psycopg.errors.DiskFull):
        return (" (the server's disk is full where this database or its WAL lives: free "
                "space there; workers try again meanwhile)")
    if isinstance(exc, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable)) \
            and "timeout" in why:
        return (" (the server's statement_timeout or lock_timeout, set for this role or "
                "database or in postgresql.conf, cut it; Tether needs neither)")
    return ""


class NoAnswer(psycopg.OperationalError):
    """The server did not answer an operation within its deadline: the connection was
    dropped (``_deadline``). A connection error like the others (``CONNECTION_ERRORS``),
    so it becomes StoreUnavailable."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:g} s (connection dropped)")
        self.seconds = seconds


class Unanswered(psycopg.OperationalError):
    """The connection was lost once a transaction's COMMIT (or a statement that commits
    on its own) may have gone out, before its answer came: it may have committed.
    Raised for the error met (``reason``, whose text it has); a StoreUnavailable with
    ``outcome_unknown`` at the store's boundary. ``backend``: the server process of
    the session that sent the COMMIT (its pid, read before the write: libpq forgets it
    once the connection is lost; 0 if unknown). A network cut leaves that session
    alive on the server, the COMMIT perhaps still on its way to it or unread in its
    socket: until it has ended, a write not found may still commit."""

    def __init__(self, reason: BaseException, backend: int = 0) -> None:
        super().__init__(str(reason))
        self.reason = reason
        self.backend = backend


def may_read_back(exc: StoreError) -> bool:
    """Whether the outcome of a write whose commit went unanswered (``exc``, a
    StoreError at the store's boundary) may be read back on a new connection: its
    outcome is unknown (``outcome_unknown``), and the commit's deadline did not pass
    (a server that did not answer is not asked again: that would cost another deadline,
    and it may not have ended that session yet)."""
    return exc.outcome_unknown and not isinstance(exc.__cause__, NoAnswer)


def unanswered_backend(exc: BaseException) -> int:
    """The pid of the server process that was sent the unanswered COMMIT of ``exc`` (a
    StoreError whose cause is an ``Unanswered``); 0 if unknown."""
    cause = exc.__cause__
    return cause.backend if isinstance(cause, Unanswered) else 0


def unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` (or the error it was raised for: a deadline's NoAnswer) is an
    ``Unanswered``."""
    return isinstance(exc, Unanswered) or isinstance(exc.__cause__, Unanswered)


#: How a server that is up refuses a connection it has no slot for now (SQLSTATE 53300,
#: or 57P03 while it starts): libpq gives no SQLSTATE for a failed connection, only text.
_BUSY = ("too many clients", "too many connections", "remaining connection slots",
         "the database system is starting up")


def full(cfg: PgConfig, exc: BaseException, waited: float) -> StoreUnavailable:
    """The StoreUnavailable for a server that still had no free connection slot
    (``busy``) after ``waited`` seconds of asking: it is up, so the message says which
    limit to look at rather than "unavailable" alone."""
    return StoreUnavailable(
        f"PostgreSQL at {cfg.host}:{cfg.port} has no free connection slot "
        f"after {waited:g} s ({connect_reason(exc)}): the server's max_connections, or "
        "the role's or the database's connection limit, is reached; see who holds the "
        "connections in pg_stat_activity, then lower the workers' pool_max or raise "
        "the limit")


def busy(exc: BaseException) -> bool:
    """Whether a failed connection was refused for want of a free slot (or a server still
    starting up), so that trying again a moment later may succeed."""
    text = str(exc)
    return isinstance(exc, psycopg.OperationalError) and any(b in text for b in _BUSY)


#: Errors that mean "the server or the connection is gone"; retrying later may succeed.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
    OSError,
)


def role_of(cfg: PgConfig) -> str:
    """The role the URL logs in as (libpq's default, the OS user, when it names none)."""
    user = conninfo_to_dict(cfg.conninfo).get("user")
    return str(user) if user else getpass.getuser()


def lacks_privilege(cfg: PgConfig, exc: BaseException) -> str:
    """The message for the server's "permission denied" (SQLSTATE 42501) to an
    operation on an existing store: which role, which schema, what to grant. Before,
    "PostgreSQL store h:p/db failed: permission denied for table schema_version" named
    neither, and read as a fault of the store."""
    return (f"PostgreSQL role {role_of(cfg)!r} may not use the Tether store in schema "
            f"{cfg.schema!r} at {cfg.where} ({_first_line(exc)}; a configuration "
            "problem, not an outage): grant the role USAGE on the schema and SELECT, "
            "INSERT, UPDATE, DELETE on its tables and USAGE on its sequences "
            "(docs/postgres.md, \"Roles and privileges\"), or use the schema owner's role")


@contextlib.contextmanager
def translate_errors(cfg: PgConfig) -> Iterator[None]:
    """Nothing above the store sees psycopg: map its errors to Tether's, chained."""
    try:
        yield
    except psycopg.errors.TransactionRollback:
        raise  # serialization failure / deadlock: the caller retries the transaction
    except CONNECTION_ERRORS as exc:
        reason = exc.reason if isinstance(exc, Unanswered) else exc
        error = unavailable(cfg, reason)
        error.outcome_unknown = unanswered(exc)
        # (the server's FATAL that ended the session: 57P01 a terminated backend, ...)
        error.sqlstate = getattr(reason, "sqlstate", None) or None
        raise error from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreError(lacks_privilege(cfg, exc), sqlstate=exc.sqlstate) from exc
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL store {cfg.where} failed: {_first_line(exc)}",
                         sqlstate=exc.sqlstate) from exc
