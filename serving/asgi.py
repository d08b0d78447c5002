"""The service as a plain ASGI application, for uvicorn (or any ASGI server).

No web framework: this module turns one ASGI request into a :class:`Request`,
enforces what must be refused before any work (body size, requests in
progress), hands it to the router and writes its :class:`Response`. Routing
and handlers live in :mod:`serving.app`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

JSON = "application/json"
error_log = logging.getLogger("serving.error")


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client: str


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]
ANY = "*"  # the method of a route whose handler checks the method itself
Refusal = Callable[[int, str, dict[str, str]], Response]
Shedder = Callable[[str, bytes], "Response | None"]
Hook = Callable[[], Awaitable[None]]


def admits(network: str) -> Callable[[Handler], Handler]:
    """Marks a handler that runs ``network``: while that model's queue is full, its
    requests are refused before their body is read (``AsgiApp.shed``)."""

    def mark(handler: Handler) -> Handler:
        handler.admits = network  # type: ignore[attr-defined]
        return handler

    return mark


_CLOSE = {"connection": "close"}
_RETRY = {"retry-after": "1"}


@dataclass
class AsgiLimits:
    max_body_bytes: int
    max_concurrency: int
    max_unread_bytes: int = 0  # with ``unread``: refuse new work above this
    unread: Callable[[], int] | None = None  # bytes of answers clients have not read


class AsgiApp:
    """``handle(Request) -> Response`` as an ASGI 3 callable, with a lifespan.

    ``shed(path, query)`` may refuse a request before its body is read: under overload
    a refusal must cost far less than a request, or refusing starves the service.
    ``refuse(status, message, headers)`` words the answers given here without the
    router: 413 for a body above the limit (from Content-Length before reading, or
    while streaming a chunked body), 503 with Retry-After above the requests in
    progress. A body above the limit is answered with ``Connection: close``, so the
    server never reads the rest of it.
    """

    def __init__(
        self,
        handle: Handler,
        refuse: Refusal,
        limits: AsgiLimits,
        startup: Hook | None = None,
        shutdown: Hook | None = None,
        shed: Shedder | None = None,
    ):
        self.handle = handle
        self.refuse = refuse
        self.shed = shed
        self.limits = limits
        self.startup = startup
        self.shutdown = shutdown
        self.in_progress = 0

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.startup is not None:
                        await self.startup()
                except Exception as error:
                    error_log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.shutdown is not None:
                    await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        limit = self.limits.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            message = f"request body of {declared} bytes is above the {limit}-byte limit"
            await _send(send, self.refuse(413, message, _CLOSE))
            return
        if self.in_progress >= self.limits.max_concurrency:
            message = f"{self.in_progress} requests in progress, the limit; retry"
            await _send(send, self.refuse(503, message, _RETRY))
            return
        if self.limits.unread is not None and (
            (unread := self.limits.unread()) > self.limits.max_unread_bytes
        ):
            message = f"{unread} bytes of answers wait for their clients to read them; retry"
            await _send(send, self.refuse(503, message, _RETRY))
            return
        if self.shed is not None and (refusal := self.shed(scope["path"], scope["query_string"])):
            await _send(send, refusal)  # its body is never read: uvicorn discards it
            return
        self.in_progress += 1
        try:
            body = await _read_body(receive, limit)
            if body is None:  # the client went away
                return
            if isinstance(body, int):
                message = f"request body is above the {limit}-byte limit (at {body} bytes)"
                await _send(send, self.refuse(413, message, _CLOSE))
                return
            query = scope["query_string"]
            client = scope.get("client")
            request = Request(
                scope["method"],
                scope["path"],
                dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {},
                headers,
                body,
                f"{client[0]}:{client[1]}" if client else "",
            )
            await _send(send, await self.handle(request))
        finally:
            self.in_progress -= 1


async def _read_body(receive, limit: int) -> bytes | int | None:
    """The whole body; its size so far once above ``limit``; None if the client left."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else len(body)
    parts, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return size
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send(send, response: Response) -> None:
    headers = [
        (b"content-type", response.content_type.encode("latin-1")),
        (b"content-length", str(len(response.body)).encode("latin-1")),
    ]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
