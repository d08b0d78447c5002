"""The service's HTTP/1.1 layer on a real loopback socket, with raw bytes from the client side."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time

import httpx
import orjson
import pytest

from serving.http import HttpServer, Limits, Request, Response


async def echo(request: Request) -> Response:
    if request.path == "/slow":
        await asyncio.sleep(0.2)
    if request.path == "/slower":
        await asyncio.sleep(0.8)
    if request.path == "/boom":
        raise RuntimeError("a bug")
    payload = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "body": request.body.decode(),
        "ct": request.headers.get("content-type"),
    }
    return Response(200, orjson.dumps(payload))


def refusal(status: int, message: str) -> Response:
    return Response(status, orjson.dumps({"error": message}))


@pytest.fixture(scope="module")
def server():
    """An HttpServer on its own event loop thread; yields its port."""
    loop = asyncio.new_event_loop()
    limits = Limits(max_body_bytes=1000, read_timeout_s=0.5)
    http = HttpServer(echo, refusal, limits)
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(http.start("127.0.0.1", 0))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    yield http.port
    asyncio.run_coroutine_threadsafe(http.stop(1.0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def exchange(port: int, data: bytes, wait: float = 0.5) -> bytes:
    """Send raw bytes, return everything the server sends until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(wait)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        return received


def statuses(raw: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def test_keep_alive_query_and_body(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server}") as client:
        first = client.post("/a%20b?x=1&y=", content=b"hello", headers={"content-type": "text/x"})
        second = client.get("/again")
    assert first.json() == {
        "method": "POST",
        "path": "/a b",
        "query": {"x": "1", "y": ""},
        "body": "hello",
        "ct": "text/x",
    }
    assert second.json()["path"] == "/again"
    assert first.headers["content-length"] == str(len(first.content))


def test_pipelined_requests_are_answered_in_order(server):
    requests = b"".join(
        f"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for name in ("slow", "1", "2")
    )
    raw = exchange(server, requests)
    assert statuses(raw) == [200, 200, 200]
    assert raw.index(b'"/slow"') < raw.index(b'"/1"') < raw.index(b'"/2"')


def test_chunked_body_and_expect_continue(server):
    chunked = (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert b'"body":"hello world"' in exchange(server, chunked)
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        sock.sendall(
            b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"ok")
        assert b'"body":"ok"' in sock.recv(1000)


@pytest.mark.parametrize(
    "raw, status, message",
    [
        (b"POST /x HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413, b"5000 bytes is above"),
        (
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"3e8\r\n"
            + b"a" * 1000
            + b"\r\n3e8\r\n"
            + b"a" * 1000
            + b"\r\n0\r\n\r\n",
            413,
            b"above the 1000-byte limit",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, b"malformed HTTP request"),
        (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, b"malformed HTTP request"),
        (b"GET /boom HTTP/1.1\r\n\r\n", 500, b"internal error"),
    ],
)
def test_bad_requests_get_an_error_and_the_server_survives(server, raw, status, message):
    answer = exchange(server, raw)
    assert statuses(answer) == [status], answer
    assert message in answer
    assert httpx.get(f"http://127.0.0.1:{server}/still-alive").status_code == 200


def test_a_refusal_after_pipelined_requests_keeps_their_order_then_closes(server):
    raw = b"GET /slow HTTP/1.1\r\n\r\nPOST /big HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"
    answer = exchange(server, raw)
    assert statuses(answer) == [200, 413]
    assert answer.endswith(b'5000-byte limit"}') or b"connection: close" in answer


def test_http_1_0_closes_and_slow_or_idle_clients_are_dropped(server):
    answer = exchange(server, b"GET /old HTTP/1.0\r\n\r\n", wait=2)
    assert statuses(answer) == [200] and b"connection: close" in answer

    started = time.monotonic()
    partial = exchange(server, b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", wait=3)
    assert statuses(partial) == [408] and b"did not arrive completely" in partial
    assert time.monotonic() - started < 2.5  # the 0.5 s read deadline, not the client's wait

    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        sock.settimeout(3)
        assert sock.recv(10) == b""  # idle connection closed by the server after 0.5 s


def test_upgrade_head_trailers_and_oversized_heads(server):
    upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    answer = exchange(server, upgrade)
    assert statuses(answer) == [400] and b"upgrades are not supported" in answer  # once

    # HEAD: the head of the answer without its body, and the connection stays usable.
    answer = exchange(server, b"HEAD /h HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n")
    assert statuses(answer) == [200, 200] and b'"/after"' in answer
    assert b'"/h"' not in answer

    trailer = (
        b"POST /t HTTP/1.1\r\nContent-Type: text/a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\nContent-Type: text/b\r\n\r\n"
    )
    assert b'"ct":"text/a"' in exchange(server, trailer)  # a trailer is not a header

    huge = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 200_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        for start in range(0, len(huge), 16_384):  # as a client streaming it would
            try:
                sock.sendall(huge[start : start + 16_384])
            except OSError:
                break
            time.sleep(0.002)
        sock.settimeout(2)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert statuses(answer) == [431] and b"headers above" in answer


def test_continue_and_read_deadline_behind_a_slow_answer(server):
    # The 100 Continue for a pipelined upload comes after the earlier answer, not before.
    raw = b"GET /slow HTTP/1.1\r\n\r\nPOST /u HTTP/1.1\r\nExpect: 100-continue\r\n"
    raw += b"Content-Length: 2\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        sock.sendall(raw)
        first = sock.recv(1000)
        assert first.startswith(b"HTTP/1.1 200 OK")
        while b"100 Continue" not in first:
            first += sock.recv(1000)
        sock.sendall(b"ok")
        assert b'"body":"ok"' in sock.recv(1000)

    # A request left half-sent behind a slow answer still meets the 0.5 s read deadline.
    started = time.monotonic()
    partial = b"GET /slower HTTP/1.1\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"
    answer = exchange(server, partial, wait=3)
    assert statuses(answer) == [200, 408]
    assert time.monotonic() - started < 2.9
