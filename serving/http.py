"""A small HTTP/1.1 server on asyncio and httptools: all the web stack the service needs.

Why not an ASGI framework: measured on the 2-core machine, Starlette on uvicorn spent
~64 µs of CPU per request before a handler ran, a protocol on httptools ~13 µs. For
single-image requests (an encoder image costs onnxruntime ~25 µs inside a batch) that
overhead, not the model, bounded the throughput. This module does what the service needs
and no more: keep-alive, pipelined requests answered in order, Content-Length and chunked
bodies under a size limit, a limit on the request head, ``Expect: 100-continue``, HEAD, a
deadline for reading each request, an idle timeout, back-pressure on clients that do not
read (and a deadline for them), and a graceful stop.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

import httptools

log = logging.getLogger("serving.http")
REASONS = {status.value: status.phrase for status in http.HTTPStatus}
# Requests a client may pipeline before the server stops reading from it.
MAX_PIPELINED = 32
# Request line and headers together: what httptools would otherwise buffer unbounded.
MAX_HEAD_BYTES = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    client: str | None
    keep_alive: bool = True
    http_1_0: bool = False
    _query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            qs = self.query_string
            self._query = dict(parse_qsl(qs, keep_blank_values=True)) if qs else {}
        return self._query


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, close: bool, keep_alive_1_0: bool = False) -> list[bytes]:
        lines = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, '')}",
            f"content-type: {self.content_type}",
            f"content-length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        if close:
            lines.append("connection: close")
        elif keep_alive_1_0:  # an HTTP/1.0 client closes unless told otherwise
            lines.append("connection: keep-alive")
        return [("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), self.body]


Handler = Callable[[Request], Awaitable[Response]]
# What the server answers by itself, before a handler sees the request.
Refusal = Callable[[int, str], Response]


@dataclass
class Limits:
    max_body_bytes: int = 16 * 1024 * 1024
    # A request must arrive completely within this many seconds of its first byte,
    # and an idle keep-alive connection is closed after as long.
    read_timeout_s: float = 30.0


class _Connection(asyncio.Protocol):
    """One client connection: parse requests, run them one at a time, answer in order."""

    def __init__(self, server: HttpServer):
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request | Response] = deque()  # a Response: a refusal, then close
        self.busy = False
        self.closing = False  # no more requests are read; close once the queue is answered
        self.write_paused = False  # the client is not reading: answer nothing more for now
        self.continue_owed = False  # a 100 Continue to send once earlier answers are out
        self.began_in_read = False
        self.timer: asyncio.TimerHandle | None = None
        self.client: str | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.head_bytes = 0
        self.in_message = False
        self.in_head = False

    # --- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else None
        self.server.connections.add(self)
        self._arm_timer()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.queue.clear()
        self._cancel_timer()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.began_in_read = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as error:
            if not self.closing:  # not already refused from a callback
                self._refuse(400, f"malformed HTTP request ({error})")
            return
        if self.in_head and not self.closing:
            # A head still incomplete after this read: count what it has taken (from the
            # read after the one it began in, which is at most one socket read larger).
            self.head_bytes = 0 if self.began_in_read else self.head_bytes + len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, f"request line and headers above {MAX_HEAD_BYTES} bytes")

    def eof_received(self) -> bool | None:
        # The client finished sending: answer what it already asked, then close.
        self.closing = True
        if not self.busy and not self.queue and self.transport:
            self.transport.close()
        return True  # keep the write side open until then

    def pause_writing(self) -> None:  # a slow reader: stop taking and answering requests
        self.write_paused = True
        if self.transport:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is None:
            return
        self._arm_timer()
        if not self.closing and len(self.queue) < MAX_PIPELINED:
            self.transport.resume_reading()
        if not self.busy and self.queue:
            self._next()

    # --- httptools callbacks ---------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()
        self.in_message = True
        self.in_head = True
        self.began_in_read = True
        self._arm_timer()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:  # a chunked body's trailer: not a header of the request
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.parser.should_upgrade():
            self._refuse(400, "protocol upgrades are not supported")
            raise httptools.HttpParserCallbackError("refused")
        declared = self.headers.get("content-length")
        limit = self.limits.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self._refuse(413, f"body of {declared} bytes is above the {limit}-byte limit")
            raise httptools.HttpParserCallbackError("refused")
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport:
            if self.busy or self.queue:  # not before the answers to earlier requests
                self.continue_owed = True
            else:
                self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.limits.max_body_bytes:
            self._refuse(413, f"body is above the {self.limits.max_body_bytes}-byte limit")
            raise httptools.HttpParserCallbackError("refused")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.continue_owed = False  # the body came anyway
        self._cancel_timer()
        url = httptools.parse_url(self.url)
        request = Request(
            method=self.parser.get_method().decode("latin-1"),
            path=unquote(url.path.decode("latin-1")),
            query_string=(url.query or b"").decode("latin-1"),
            headers=self.headers,
            body=b"".join(self.body),
            client=self.client,
            keep_alive=self.parser.should_keep_alive(),
            http_1_0=self.parser.get_http_version() == "1.0",
        )
        self.queue.append(request)
        if len(self.queue) >= MAX_PIPELINED and self.transport:
            self.transport.pause_reading()
        if not self.busy:
            self._next()

    # --- answering -------------------------------------------------------------------
    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` after what is already queued, then close: the stream is lost."""
        self.closing = True
        self.queue.append(self.server.refusal(status, message))
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.queue or self.transport is None:
            return
        item = self.queue.popleft()
        if isinstance(item, Response):
            self._write(item, close=True)
            return
        self.busy = True
        self.loop.create_task(self._answer(item))

    async def _answer(self, request: Request) -> None:
        try:
            response = await self.server.handler(request)
        except Exception:  # the handler guards itself; this is the last line of defence
            log.exception("unhandled error on %s", request.path)
            response = self.server.refusal(500, "internal error; see the service log")
        self.busy = False
        if self.transport is None:  # the client left meanwhile
            return
        close = not request.keep_alive or (self.closing and not self.queue)
        try:
            self._write(response, close or self.server.stopping, request)
        except Exception:  # e.g. a header that is not latin-1: never leave the client hanging
            log.exception("cannot send the answer to %s", request.path)
            self._write(self.server.refusal(500, "internal error; see the service log"), True)
        if self.transport is None:
            return
        if self.continue_owed and not self.queue:
            self.continue_owed = False
            self.transport.write(CONTINUE)
        if self.write_paused:  # resume_writing() carries on once the client reads again;
            self._arm_timer()  # if it does not within the read timeout, it is dropped
            return
        if len(self.queue) < MAX_PIPELINED and not self.closing:
            self.transport.resume_reading()
        if self.queue:
            self._next()
        elif not self.in_message or self.timer is None:
            self._arm_timer()  # idle, or the deadline of a request that began meanwhile

    def _write(self, response: Response, close: bool, request: Request | None = None) -> None:
        keep_alive_1_0 = request is not None and request.http_1_0
        head, body = response.encode(close, keep_alive_1_0)
        is_head = request is not None and request.method == "HEAD"
        self.transport.writelines([head] if is_head else [head, body])
        if close:
            self.closing = True
            transport, self.transport = self.transport, None
            self._close(transport)

    def _close(self, transport) -> None:
        transport.close()  # after the buffered answers are flushed...
        # ...unless the client never reads them: then drop it after the read timeout.
        self.loop.call_later(self.limits.read_timeout_s, transport.abort)

    # --- timeouts --------------------------------------------------------------------
    def _arm_timer(self) -> None:
        self._cancel_timer()
        self.timer = self.loop.call_later(self.limits.read_timeout_s, self._timed_out)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        """Idle, or too slow to send its request: close (an idle client expects that)."""
        self.timer = None
        if self.transport is None:
            return
        if self.write_paused:  # it stopped reading what it asked for
            self.transport.abort()
            return
        if self.busy:  # the request being read waits its turn: check it again later
            self._arm_timer()
            return
        if self.in_message:
            limit = self.limits.read_timeout_s
            self._refuse(408, f"the request did not arrive completely within {limit:g} s")
        else:
            self._close(self.transport)

    def close_if_idle(self) -> None:
        if not self.busy and not self.queue and self.transport is not None:
            self._close(self.transport)


class HttpServer:
    """Serve ``handler`` on a TCP port; ``refusal`` formats the server's own error answers."""

    def __init__(self, handler: Handler, refusal: Refusal, limits: Limits | None = None):
        self.handler = handler
        self.refusal = refusal
        self.limits = limits or Limits()
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=1024
        )

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening, let requests in flight finish (up to ``grace_s``), close the rest."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close_if_idle()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + grace_s
        while self.connections and loop.time() < give_up:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
