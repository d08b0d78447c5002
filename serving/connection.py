"""uvicorn's httptools connection, with the limits an exposed service needs.

uvicorn owns the HTTP framing. What it leaves open on its httptools protocol, and
this subclass adds (each answer is JSON ``{"error": ...}`` and closes the
connection):

- a cap on the request line plus headers (431): httptools buffers headers of any size;
- a deadline to receive a whole request, head and body, from its first byte (408):
  a client that sends part of a request and stalls would otherwise hold the
  connection forever (slowloris);
- an idle timeout from the moment a connection opens: uvicorn arms its keep-alive
  timer only after a first response;
- a cap on open connections per worker (503 with Retry-After);
- a bound on answers written but not read: while a client reads nothing, the next
  request it pipelined is not started (one unread answer per connection at most;
  uvicorn would compute and buffer them all), a client that reads nothing for
  ``write_timeout_s`` is disconnected, and :data:`UNREAD` gives the total that
  the ASGI app holds against ``max_unread_bytes``;
- upgrade requests answered as plain HTTP/1.1 (there is no WebSocket endpoint).

The limits come from :class:`ServingUvicornConfig`, so that worker processes,
which receive the configuration pickled, get them too.
"""

from __future__ import annotations

import asyncio
import email.utils

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.config import ServingConfig

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}
_REASONS[503] = "Service Unavailable"


class ServingUvicornConfig(uvicorn.Config):
    """uvicorn's configuration plus the service's connection limits."""

    def __init__(self, app, serving: ServingConfig, **kwargs):
        super().__init__(app, **kwargs)
        self.serving = serving


class _HeadTooLarge(Exception):
    pass


class UnreadAnswers:
    """The connections whose clients are not reading (the transport paused our writes).

    One per process, like uvicorn's set of connections: it is almost always empty,
    so the total costs nothing to compute per request.
    """

    def __init__(self) -> None:
        self.stalled: set[LimitedHttpToolsProtocol] = set()

    def bytes(self) -> int:
        """Bytes of answers written and not yet read, on the stalled connections."""
        return sum(p.transport.get_write_buffer_size() for p in self.stalled)


UNREAD = UnreadAnswers()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: ServingUvicornConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        limits = config.serving
        self.max_head_bytes = limits.max_head_bytes
        self.request_timeout_s = limits.request_timeout_s
        self.max_connections = limits.max_connections
        self.head_bytes = 0  # bytes of the request line and headers parsed so far
        self.head_raw = 0  # bytes received while the head is still incomplete
        self.in_head = False
        self.deadline: asyncio.TimerHandle | None = None
        self.write_timeout_s = limits.write_timeout_s
        self.write_deadline: asyncio.TimerHandle | None = None
        self.next_deferred = False  # a pipelined request waits for the client to read

    # -- connection -------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            message = f"{self.max_connections} connections open, the limit; retry"
            self.refuse(503, message, retry=True)
            return
        # Idle from the start: closed after the keep-alive timeout unless a request begins.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc) -> None:
        self._cancel_deadline()
        self._writable()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The client stopped reading: count its answer as unread, and give it
        ``write_timeout_s`` to read on before the connection is dropped."""
        super().pause_writing()
        UNREAD.stalled.add(self)
        if self.write_deadline is None:
            self.write_deadline = self.loop.call_later(self.write_timeout_s, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._writable()
        if self.next_deferred and not self.transport.is_closing():
            self.next_deferred = False
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)

    def _writable(self) -> None:
        UNREAD.stalled.discard(self)
        if self.write_deadline is not None:
            self.write_deadline.cancel()
            self.write_deadline = None

    def _stalled(self) -> None:
        self.write_deadline = None
        self.transport.abort()  # its unread answer is dropped with it

    def data_received(self, data: bytes) -> None:
        """Feed the parser. The idle timer stops when a request begins (not on any byte,
        so that blank lines cannot keep a connection open), and bytes received while a
        head is incomplete count towards its limit (httptools reports a header only once
        it has ended, so one endless header line would otherwise be buffered)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.refuse(400, "protocol upgrades are not supported; send plain HTTP/1.1")
            return
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, _HeadTooLarge):
                self._refuse_head()
            else:
                self.refuse(400, "malformed HTTP request")
            return
        if self.in_head:
            self.head_raw += len(data)
            if self.head_raw > self.max_head_bytes:
                self._refuse_head()

    # -- parser callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._unset_keepalive_if_required()
        self.head_bytes = self.head_raw = 0
        self.in_head = True
        self._cancel_deadline()
        self.deadline = self.loop.call_later(self.request_timeout_s, self._request_timed_out)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        if self.flow.write_paused and self.pipeline and not self.transport.is_closing():
            # The client has not read this answer: start its next request once it does.
            self.server_state.total_requests += 1
            self._unset_keepalive_if_required()
            self.next_deferred = True
            return
        super().on_response_complete()
        if self.deadline is not None:  # the next request has begun: its deadline rules
            self._unset_keepalive_if_required()

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()

    # -- helpers ------------------------------------------------------------------------
    def _refuse_head(self) -> None:
        self.refuse(431, f"request line and headers above {self.max_head_bytes} bytes")

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.max_head_bytes:
            raise _HeadTooLarge

    def _cancel_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _request_timed_out(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        if self._answering_earlier_request():  # not the client's fault: count from later
            self.deadline = self.loop.call_later(self.request_timeout_s, self._request_timed_out)
            return
        message = f"the request did not arrive completely within {self.request_timeout_s:g} s"
        self.refuse(408, message)

    def _answering_earlier_request(self) -> bool:
        """An earlier request, received in full, is still being answered on this connection."""
        cycle = self.cycle
        return bool(self.pipeline) or (
            cycle is not None and not cycle.response_complete and not cycle.more_body
        )

    def refuse(self, status: int, message: str, retry: bool = False) -> None:
        """Answer ``status`` with a JSON error and close, outside any ASGI cycle.

        Behind an answer still being written, the connection closes after that answer.
        """
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if self._answering_earlier_request():
                cycle.keep_alive = False
                self.flow.pause_reading()
                return
            if cycle.response_started:
                self.transport.close()
                return
        body = orjson.dumps({"error": message})
        head = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"date: {email.utils.formatdate(usegmt=True)}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        if retry:
            head.append("retry-after: 1")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.transport.close()
