"""HTTP/1.1 plumbing of the scripted server: one connection, reading a request,
writing a response head, JSON bodies and chunks (standard library only)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import socket
import struct
from collections.abc import Mapping
from typing import Any

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 408: "Request Timeout", 409: "Conflict",
           413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout", 529: "Overloaded"}



class Conn:
    """One client connection: the stream pair and whether it was cut."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.aborted = False
        #: The query string of the request being answered (after ``?``; the path
        #: ``read_request`` returns has none).
        self.query = ""

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def abort(self) -> None:
        """Cut the connection with a TCP RST (SO_LINGER 0), no FIN, no response."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
           with contextlib.suppress(OSError):
               sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        self.aborted = True


    async def send_chunk(self, text: str) -> None:
        """One chunk of a ``transfer-encoding: chunked`` body."""
        data = text.encode()
        await self.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    async def end_chunks(self) -> None:
        await self.send(b"0\r\n\r\n")

    async def respond(self, status: int, body: Any, *,
                     headers: Mapping[str, str] | None = None) -> None:
        """A JSON response."""
        data = json.dumps(body).encode()
        await self.send(head(status, {"content-type": "application/json",
                                     "content-length": str(len(data)), **(headers or {})})
                       + data)


def head(status: int, headers: Mapping[str, str]) -> bytes:
    """A response's status line and headers."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
            f"date: {email.utils.formatdate(usegmt=True)}", "server: tether-llm-server"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_request(conn: Conn) -> tuple[str, str, dict[str, str], bytes, bool] | None:
    """``(method, path, headers, body, keep_alive)`` of the next request, or ``None``
    when the client closed the connection (or sent something that is not HTTP)."""
    try:
        raw = await conn.reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        await conn.send(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                        b"content-length: 0\r\nconnection: close\r\n\r\n")
        return None
    lines = raw.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        await conn.send(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                        b"connection: close\r\n\r\n")
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await conn.reader.readuntil(b"\r\n")
                break
            parts.append(await conn.reader.readexactly(size))
            await conn.reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await conn.reader.readexactly(int(headers.get("content-length", "0")))
    keep_alive = (version.strip() == "HTTP/1.1"
                  and headers.get("connection", "").lower() != "close")
    path, _, conn.query = target.partition("?")
    return method.upper(), path, headers, body, keep_alive
