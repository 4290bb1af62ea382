"""The hottest statement (a lone journal append: one per sequential step) sent through
libpq's own calls (``psycopg.pq``), past psycopg's cursor layer.

``conn.execute`` costs 100-180 µs of client CPU per statement on the async connection:
converting the query and its parameters (``PostgresQuery``, a ``Transformer`` and a
dumper lookup per parameter), the prepared-statement bookkeeping, building a cursor and
its description, and a wait that registers a reader, a future and a 0.1 s timer. Here a
statement is prepared once per connection under a fixed name (``PREPARE``), and each
execution is one ``PQsendQueryPrepared`` with parameters encoded by their declared type,
and one reader callback that reads the whole answer.

The callback also hands the answer to ``on_result`` at once, so a caller waiting for the
statement (a step of a run) is woken in the same pass of the event loop as the task that
ran the statement, not one pass later.

The store's inline append uses the parts separately: ``Prepared.send``, then
``wait_answer`` (the calling thread blocked in ``poll`` on the socket, for a bounded
time) and, for an answer later than that, ``answer_reader`` as the kept connection's
reader callback.

Errors are psycopg's own: an error result becomes ``psycopg.errors.error_from_result``
(the class of its SQLSTATE, as ``conn.execute`` raises it; every result of the answer is
checked, since a failed implicit COMMIT follows the statement's own result), a failed
read or send the
``OperationalError`` libpq's wrappers raise, so ``translate_errors`` maps them exactly as
before. A statement the server no longer knows (``DEALLOCATE ALL``, which psycopg sends
after a ``ROLLBACK`` on the connection) is prepared again and sent again: an execution of
an unknown statement fails before doing anything. Cancelled while the statement is in
flight, the connection is left busy (``ACTIVE``), and the store closes such a connection
when it is given back (``_unfit_to_reuse``): the pool makes a new one.
"""

from __future__ import annotations

import asyncio
import math
import re
import select
import struct
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import psycopg
from psycopg import errors as e
from psycopg import pq

from tether.store.postgres._arrays import ARRAY_ENCODERS

Conn = psycopg.AsyncConnection[Any]
#: Parameters already encoded, given the connection's encoding (see Prepared.execute).
Encoder = Callable[[str], list[bytes | None]]

_FLOAT8 = struct.Struct("!d").pack
#: A placeholder, text (``%(name)s``) or binary (``%(name)b``): either way a parameter
#: encoded by its declared type.
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sb]")
#: SQLSTATE of "prepared statement ... does not exist".
_UNKNOWN_STATEMENT = "26000"


def _text(value: Any, encoding: str) -> bytes | None:
    return None if value is None else str(value).encode(encoding)


def _integer(value: Any, encoding: str) -> bytes | None:
    return None if value is None else b"%d" % value


def _float8(value: Any, encoding: str) -> bytes | None:
    return None if value is None else _FLOAT8(value)


def _array(encode: Callable[[list[Any]], bytes], value: Any, encoding: str) -> bytes | None:
    return None if value is None else encode(value)


#: PostgreSQL type → (encoder, format: 0 text, 1 binary). Strings in binary: the same
#: bytes, but sent with their length (a text-format value ends at its first NUL byte, so
#: "x\0y" would be stored as "x"; in binary the server refuses it, as psycopg does).
#: Integers as text (the server parses them and refuses what is out of range); floats in
#: binary (exact, no repr). Arrays in PostgreSQL's binary array format, written by the
#: dumpers psycopg uses for them (``_arrays``).
_ENCODERS: dict[str, tuple[Callable[[Any, str], bytes | None], int]] = {
    "text": (_text, 1),
    "integer": (_integer, 0),
    "bigint": (_integer, 0),
    "float8": (_float8, 1),
    **{name: (partial(_array, encode), 1) for name, encode in ARRAY_ENCODERS.items()},
}


class Prepared:
    """A named query of ``queries.sql`` (``%(name)s`` placeholders) prepared once per
    connection as ``name`` with the declared parameter types."""

    def __init__(self, name: str, sql: str, types: Mapping[str, str]) -> None:
        order: list[str] = []

        def number(m: re.Match[str]) -> str:
            if m.group(1) not in order:
                order.append(m.group(1))
            return f"${order.index(m.group(1)) + 1}"

        body = _PLACEHOLDER.sub(number, sql).strip().rstrip(";")
        if "%" in body or set(order) != set(types):
            raise ValueError(f"{name}: placeholders {order} do not match types {sorted(types)}")
        self.name = name.encode()
        self.order = tuple(order)
        self._encode = tuple(_ENCODERS[types[n]][0] for n in order)
        self.formats = [_ENCODERS[types[n]][1] for n in order]
        self.prepare_sql = (f"PREPARE {name} ({', '.join(types[n] for n in order)}) "
                            f"AS {body}")
        #: The connections this statement is prepared on, and their encoding.
        self._on: weakref.WeakKeyDictionary[Conn, str] = weakref.WeakKeyDictionary()

    def values(self, params: Mapping[str, Any], encoding: str) -> list[bytes | None]:
        """``params`` encoded in the statement's order, by the declared types."""
        return [enc(params[n], encoding) for enc, n in zip(self._encode, self.order,
                                                            strict=True)]

    async def execute(self, conn: Conn, params: Mapping[str, Any] | Encoder, *,
                      on_result: Callable[[pq.abc.PGresult], None] | None = None,
                      held: Held | None = None) -> pq.abc.PGresult:
        """Run the statement on ``conn`` (a pooled connection this task holds, idle);
        return its result (``TUPLES_OK`` or ``COMMAND_OK``) after ``on_result`` saw it.
        ``params``: by name, or a function of the connection's encoding that returns
        them encoded as :meth:`values` would (in ``order``, by the declared types).
        ``held``: the :class:`Held` that keeps ``conn`` (and its reader), if any.

        Raises: psycopg.Error (as ``conn.execute`` would).
        """
        encoding = self._on.get(conn)
        if encoding is None:
            await self._prepare(conn, held)
            encoding = self._on[conn] = conn.info.encoding
        values = (params(encoding) if callable(params)
                  else self.values(params, encoding))
        try:
            return await _send_and_read(conn.pgconn, self.name, values, self.formats,
                                        encoding, on_result, held)
        except e.Error as exc:
            if exc.sqlstate != _UNKNOWN_STATEMENT:
                raise
        # The server forgot the statement (DEALLOCATE ALL): prepare it and send it again.
        await self._prepare(conn, held)
        return await _send_and_read(conn.pgconn, self.name, values, self.formats,
                                    encoding, on_result, held)

    def send(self, conn: Conn, params: Encoder) -> str | None:
        """Send the statement on ``conn`` without waiting for its answer, if it is
        prepared there: the connection's encoding (to read the answer with); None when
        it is not prepared there (nothing sent: use :meth:`execute`).

        Raises: psycopg.Error (as libpq's send does).
        """
        encoding = self._on.get(conn)
        if encoding is None:
            return None
        conn.pgconn.send_query_prepared(self.name, params(encoding),
                                        param_formats=self.formats)
        return encoding

    async def _prepare(self, conn: Conn, held: Held | None) -> None:
        if held is None:
            await conn.execute(self.prepare_sql)
            return
        held.pause()  # psycopg's own wait registers (and removes) a reader on the socket
        try:
            await conn.execute(self.prepare_sql)
        finally:
            held.resume()


class Held:
    """A pooled connection that one task keeps between its statements, with a reader
    left registered on its socket: no pool checkout and return, no ``epoll_ctl`` pair,
    per statement. ``broken`` turns true when the socket becomes readable with nothing in
    flight (the server is closing the connection, as ``_looks_dead`` tests on checkout),
    and when a read found the connection lost.

    libpq closes a connection's socket itself when a read finds it lost ("server closed
    the connection unexpectedly"), and the next socket made (a new connection's) takes
    its number. So the reader is removed in the callback whose read lost the
    connection, before anything else runs, and never registered again on a lost one: a
    registration left behind made the next connection's ``add_reader`` fail ("connection
    socket closed", a failed connection attempt of a server that was up), and one made
    on the closed number raised ``[Errno 9] Bad file descriptor`` in place of the
    connection's own error (the reason a worker's log gave for a restart).
    """

    def __init__(self) -> None:
        self.conn: Conn | None = None
        self.broken = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._registered = False
        self._on_readable: Callable[[], None] | None = None

    def attach(self, conn: Conn) -> None:
        fd = conn.pgconn.socket  # raises for a closed connection: nothing kept then
        self.conn, self.broken, self._fd = conn, False, fd
        self._loop = asyncio.get_running_loop()
        self.resume()

    def detach(self) -> Conn | None:
        """Stop keeping the connection (to return it to the pool)."""
        self.pause()
        conn, self.conn, self._loop, self._on_readable = self.conn, None, None, None
        return conn

    def pause(self) -> None:
        if self._registered and self._loop is not None:
            self._registered = False
            self._loop.remove_reader(self._fd)

    def resume(self) -> None:
        if self._registered or self._loop is None or self.conn is None or self.broken:
            return
        if self.conn.pgconn.status != pq.ConnStatus.OK:
            self.broken = True  # (lost: libpq closed its socket, whose number is reused)
            return
        self._loop.add_reader(self._fd, self._readable)
        self._registered = True

    def _readable(self) -> None:
        if self._on_readable is not None:
            self._on_readable()
            if self.conn is not None and self.conn.pgconn.status != pq.ConnStatus.OK:
                self.broken = True  # (the read found it lost: its socket is closed)
                self.pause()
            return
        self.broken = True
        self.pause()


def read_answer(pgconn: pq.abc.PGconn, results: list[pq.abc.PGresult],
                encoding: str) -> bool:
    """Read what has arrived of a statement's answer into ``results``; True once all of
    it is in (ReadyForQuery: the implicit transaction has committed or failed), every
    result then checked, as psycopg does (a failed commit comes after the statement's
    own result). Raises: psycopg.Error (an error result; a failed read), OSError."""
    pgconn.consume_input()
    while not pgconn.is_busy():
        res = pgconn.get_result()
        if res is not None:
            results.append(res)
            continue
        if not results:
            raise e.InternalError("got no result from the query")
        for res in results:
            if res.status == pq.ExecStatus.FATAL_ERROR:
                raise e.error_from_result(res, encoding=encoding)
            if res.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                raise e.InternalError(
                    f"unexpected result status: {pq.ExecStatus(res.status).name}")
        return True
    return False


def wait_answer(pgconn: pq.abc.PGconn, results: list[pq.abc.PGresult], encoding: str,
                timeout: float) -> bool:
    """Block the calling thread (``poll`` on the socket) for up to ``timeout`` seconds
    until the whole answer is in (True, ``results`` holding it) or the time is up (False,
    ``results`` holding what was read). Raises as :func:`read_answer`."""
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if poller.poll(max(1, math.ceil(remaining * 1000))) \
                and read_answer(pgconn, results, encoding):
            return True


async def _flushed(pgconn: pq.abc.PGconn, loop: asyncio.AbstractEventLoop) -> None:
    """Write the rest of what was sent on ``pgconn`` whenever its socket takes more.
    Raises: psycopg.OperationalError (the connection failed)."""
    fd = pgconn.socket
    while True:
        writable: asyncio.Future[None] = loop.create_future()
        loop.add_writer(fd, writable.set_result, None)
        try:
            await writable
        finally:
            loop.remove_writer(fd)
        if not pgconn.flush():
            return


def answer_reader(pgconn: pq.abc.PGconn, encoding: str,
                  fut: asyncio.Future[pq.abc.PGresult],
                  on_result: Callable[[pq.abc.PGresult], None] | None = None,
                  results: list[pq.abc.PGresult] | None = None) -> Callable[[], None]:
    """A reader callback for the socket that resolves ``fut`` with the statement's
    result once the whole answer is in (``on_result`` sees it first), or with the error;
    ``results``: what was already read of the answer."""
    got: list[pq.abc.PGresult] = [] if results is None else results

    def readable() -> None:
        if fut.done():
            return
        try:
            if read_answer(pgconn, got, encoding):
                if on_result is not None:
                    on_result(got[0])
                fut.set_result(got[0])
        except OSError as exc:
            fut.set_exception(e.OperationalError("connection socket closed"))
            fut.exception().__cause__ = exc  # type: ignore[union-attr]
        except Exception as exc:  # handed to the awaiting task
            fut.set_exception(exc)

    return readable


async def _send_and_read(pgconn: pq.abc.PGconn, name: bytes, values: Sequence[bytes | None],
                         formats: Sequence[int], encoding: str,
                         on_result: Callable[[pq.abc.PGresult], None] | None,
                         held: Held | None = None) -> pq.abc.PGresult:
    # psycopg's connections are in libpq's non-blocking mode: the send writes what the
    # socket takes, and the rest of a long message (megabytes of a step's result) is
    # written as the socket drains, as psycopg's own execute does in its flush loop.
    # (It was never written: the server waited for the rest of the statement, the
    # client for its answer.)
    pgconn.send_query_prepared(name, values, param_formats=formats)
    loop = asyncio.get_running_loop()
    if pgconn.flush():
        await _flushed(pgconn, loop)
    fut: asyncio.Future[pq.abc.PGresult] = loop.create_future()
    readable = answer_reader(pgconn, encoding, fut, on_result)
    if held is not None and held.conn is not None and held.conn.pgconn is pgconn \
            and not held.broken:
        def held_readable() -> None:
            readable()
            if fut.done() and held._on_readable is held_readable:
                held._on_readable = None  # the statement is over: the connection is free

        held._on_readable = held_readable
        try:
            return await fut
        finally:
            # (Only its own: once the answer was in, the connection may already carry
            # another statement with its own reader, an inline append's.)
            if held._on_readable is held_readable:
                held._on_readable = None
    fd = pgconn.socket
    registered = True

    def read() -> None:
        # (Removed here once the answer is in or the read failed: a read that found the
        # connection lost closed its socket, whose number the next socket made takes;
        # see ``Held``.)
        nonlocal registered
        readable()
        if fut.done() and registered:
            registered = False
            loop.remove_reader(fd)

    loop.add_reader(fd, read)
    try:
        return await fut
    finally:
        if registered:
            loop.remove_reader(fd)
