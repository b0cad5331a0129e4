"""The few pieces of HTTP/1.1 our servers need, on asyncio streams: one request per connection.

Shared by the relay's observability endpoints and the dashboard, so that both run on the relay's
own event loop with no framework and no thread. Requests are small by construction (probes,
pages, forms of a few ids): the head is capped at ``MAX_HEAD`` bytes and a body at ``MAX_BODY``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs

MAX_HEAD = 8192  # request line + headers; anything bigger is not a probe or a browser page
MAX_BODY = 65536  # a form of a few hundred event ids; nothing we accept is larger
READ_TIMEOUT = 5.0  # a client that trickles its request must not hold a connection forever

REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    421: "Misdirected Request",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes = b""

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None

    def form(self) -> dict[str, list[str]]:
        """The body as ``application/x-www-form-urlencoded`` fields (empty for anything else)."""
        if self.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            return {}
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=1000)

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """``(method, path, query string, lower-cased headers)``; method is "" when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return "", "", "", {}
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    path, _, query = parts[1].partition("?")
    return parts[0].upper(), path, query, headers


async def read_request(reader: asyncio.StreamReader) -> Request | Response | None:
    """The next request, an error response to send instead, or None when the client went away."""
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, query, headers = parse_head(head)
            if not method:
                return text(400, "bad request")
            try:
                length = int(headers.get("content-length", "0") or "0")
            except ValueError:
                return text(400, "bad content-length")
            if length < 0 or length > MAX_BODY:
                return text(413, "request body too large")
            body = await reader.readexactly(length) if length else b""
    except asyncio.LimitOverrunError:
        return text(400, "request too large")
    except (TimeoutError, asyncio.IncompleteReadError):
        return None
    return Request(method, path, parse_qs(query, keep_blank_values=True, max_num_fields=100), headers, body)


async def write_response(writer: asyncio.StreamWriter, response: Response, *, head_only: bool = False) -> None:
    lines = [
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Error')}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else response.body))
    await writer.drain()


Handler = Callable[[Request], Awaitable[Response]]


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
    """Read one request, answer it with ``handler``, close."""
    try:
        request = await read_request(reader)
        if request is None:
            return
        if isinstance(request, Response):
            await write_response(writer, request)
            return
        response = await handler(request)
        await write_response(writer, response, head_only=request.method == "HEAD")
    except ConnectionError:
        pass  # the client went away; nothing to tell it
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class Listener:
    """A server on ``host:port`` that answers each connection with :meth:`dispatch`; subclasses
    say what to serve. ``port=0`` lets the OS choose (tests): read ``.port`` once started."""

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self._requested_port, limit=MAX_HEAD)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, self.dispatch)

    async def dispatch(self, request: Request) -> Response:
        raise NotImplementedError
