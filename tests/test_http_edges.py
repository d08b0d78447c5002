"""What users rely on at the HTTP edge, through the real server (uvicorn) on loopback.

Raw sockets from the client side where a well-behaved client library would not
misbehave on purpose: oversized or malformed heads, stalled bodies, idle sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import REPO
from tests.serving_helpers import free_port, running_service, wait_ready

LIMITS = (
    "--max-body-bytes", "100000",
    "--max-head-bytes", "4096",
    "--request-timeout-s", "1",
    "--keep-alive-s", "1",
    "--log-level", "warning",
)  # fmt: skip


@pytest.fixture(scope="module")
def port(exported_repo):
    with running_service(exported_repo, *LIMITS) as url:
        yield int(url.rsplit(":", 1)[1])


def exchange(port: int, data: bytes, wait: float = 0.5) -> bytes:
    """Send raw bytes, return everything the server sends until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(wait)
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def statuses(raw: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def alive(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_a_declared_body_above_the_limit_is_refused_before_it_is_sent(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/encode HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
        sock.settimeout(3)
        answer = b""  # no body sent: the answer comes from the head alone, then a close
        while chunk := sock.recv(65536):
            answer += chunk
    assert statuses(answer) == [413], answer
    assert b"5000000 bytes is above the 100000-byte limit" in answer
    assert b"connection: close" in answer.lower()
    assert alive(port)


def test_a_streamed_body_is_counted_and_cut_at_the_limit(port):
    chunk = b"a" * 30_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    head = b"POST /v1/encode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = exchange(port, head + body)
    assert statuses(answer) == [413], answer
    assert b"above the 100000-byte limit" in answer
    assert alive(port)


@pytest.mark.parametrize(
    "raw, status, message",
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, b"malformed HTTP request"),
        (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, b"malformed HTTP request"),
        (b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n", 431, b"above 4096"),
        (b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\n\r\n", 431, b"above 4096"),
        (
            b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n",
            431,
            b"request line and headers",
        ),
        (  # no upgrade: answered once, as plain HTTP
            b"GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            404,
            b"no such endpoint /x",
        ),
    ],
)
def test_malformed_or_oversized_heads_get_a_json_4xx(port, raw, status, message):
    answer = exchange(port, raw)
    assert statuses(answer) == [status], answer
    assert message in answer and b'{"error":' in answer
    assert alive(port)


def test_one_endless_header_line_is_cut_at_the_limit(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: ")
        answer = b""
        with contextlib.suppress(OSError):
            for _ in range(40):  # 40 KB of one header value, never ended, in small pieces
                sock.sendall(b"a" * 1000)
                time.sleep(0.005)
        sock.settimeout(3)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert statuses(answer) == [431], answer
    assert alive(port)


def test_blank_lines_do_not_keep_an_idle_connection_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        closed = False
        with contextlib.suppress(OSError):
            for _ in range(8):  # 4 s of a blank line every 0.5 s; the idle timeout is 1 s
                sock.sendall(b"\r\n")
                time.sleep(0.5)
            sock.settimeout(0.5)
            closed = sock.recv(10) == b""
        assert closed or time.monotonic() - started < 3.9


def test_keep_alive_pipelining_and_the_standard_headers(port):
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    answer = exchange(port, raw)
    assert statuses(answer) == [200, 200, 200]
    assert answer.lower().count(b"\r\ndate: ") == 3  # uvicorn's Date header
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        first = client.get("/healthz")
        second = client.post("/v1/sample", json={"n": 1})
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/json"


def test_a_stalled_request_gets_408_and_an_idle_connection_is_closed(port):
    started = time.monotonic()
    partial = exchange(port, b"POST /v1/encode HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 4)
    assert statuses(partial) == [408], partial
    assert b"did not arrive completely within 1 s" in partial
    assert time.monotonic() - started < 3.5  # the 1 s deadline, not the client's wait

    started = time.monotonic()
    head_only = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 4)  # never finished
    assert statuses(head_only) == [408] and time.monotonic() - started < 3.5

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(4)
        started = time.monotonic()
        assert sock.recv(10) == b""  # nothing sent: closed after the 1 s idle timeout
        assert time.monotonic() - started < 3.5


def slow_sample(url: str, results: list, n: int = 4096) -> threading.Thread:
    """A request that takes a while: n one-row onnxruntime calls (--max-batch-size 1),
    ~2 s on an idle machine; callers raise --timeout-s so that a loaded one does not 504."""

    def call():
        results.append(httpx.post(url + "/v1/sample", json={"n": n}, timeout=60))

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_requests_in_progress_and_connections_are_capped_with_503(exported_repo):
    flags = ("--max-concurrency", "1", "--max-connections", "3", "--max-batch-size", "1")
    flags += ("--max-request-items", "4096", "--log-level", "warning", "--timeout-s", "60")
    with running_service(exported_repo, *flags) as url:
        port = int(url.rsplit(":", 1)[1])
        results: list = []
        thread = slow_sample(url, results)
        time.sleep(0.3)
        refused = httpx.get(url + "/healthz", timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "requests in progress" in refused.json()["error"]
        thread.join(60)
        assert results[0].status_code == 200
        assert httpx.get(url + "/healthz").status_code == 200

        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            time.sleep(0.2)
            answer = exchange(port, b"GET /healthz HTTP/1.1\r\n\r\n", wait=1)
            assert statuses(answer) == [503] and b"connections open" in answer
            assert b"retry-after: 1" in answer
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        assert httpx.get(url + "/healthz").status_code == 200


def sample_count(url: str) -> int:
    metrics = httpx.get(url + "/metrics").text
    found = re.search(r'vae_requests_total\{route="sample",status="200"\} (\S+)', metrics)
    return int(float(found[1])) if found else 0


def test_clients_that_do_not_read_hold_one_answer_each_and_are_dropped(exported_repo):
    """Pipelined requests of a client that reads nothing are not computed ahead (one
    unread answer per connection); above --max-unread-bytes in total new work gets 503;
    after --write-timeout-s such clients are disconnected and the memory comes back.
    A client that pipelines and then reads gets every answer."""
    flags = ("--max-unread-bytes", str(1 << 20), "--write-timeout-s", "3")
    flags += ("--max-request-items", "4096", "--log-level", "warning")
    body = b'{"n": 512}'
    request = b"POST /v1/sample HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    request += body
    with running_service(exported_repo, *flags) as url:
        port = int(url.rsplit(":", 1)[1])
        sleepers = []
        for _ in range(3):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(request * 8)
            sleepers.append(sock)
        try:
            deadline = time.monotonic() + 30
            while True:
                refused = httpx.get(url + "/healthz", timeout=10)
                if refused.status_code == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert refused.status_code == 503, refused.text
            assert "wait for their clients to read them" in refused.json()["error"]
            assert refused.headers["retry-after"] == "1"
            time.sleep(0.5)
            assert sample_count(url) <= 6  # at most the answer written and the one after
            deadline = time.monotonic() + 15  # the write timeout drops the sleepers
            while httpx.get(url + "/healthz", timeout=10).status_code != 200:
                assert time.monotonic() < deadline, "stalled clients were never dropped"
                time.sleep(0.2)
        finally:
            for sock in sleepers:
                sock.close()

        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request * 4)
            time.sleep(1)  # pipelined, unread for a while, then read
            received = b""
            while received.count(b"HTTP/1.1 200") < 4 or not received.endswith(b"}"):
                chunk = sock.recv(1 << 20)
                assert chunk, "the connection closed before every answer arrived"
                received += chunk
        answers = received.split(b"HTTP/1.1 ")[1:]
        assert [a[:3] for a in answers] == [b"200"] * 4


def test_sigterm_lets_requests_in_flight_finish(exported_repo):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--repo", str(exported_repo), "--port", str(port)]
        + ["--max-batch-size", "1", "--max-request-items", "4096", "--log-level", "warning"]
        + ["--timeout-s", "60"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url)
        results: list = []
        thread = slow_sample(url, results)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        thread.join(60)
        assert results and results[0].status_code == 200
        assert len(results[0].json()["images"]) == 4096
        # uvicorn re-raises the signal once it has shut down, as a killed process would.
        assert process.wait(20) in (0, -signal.SIGTERM)
        assert "Traceback" not in process.stderr.read()
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", timeout=2)  # no longer listening
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_two_workers_share_the_port(exported_repo):
    with running_service(exported_repo, "--workers", "2", "--log-level", "warning") as url:

        async def many():
            limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each time
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
                pids = set()
                deadline = time.monotonic() + 30
                while len(pids) < 2 and time.monotonic() < deadline:
                    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(16)))
                    pids |= {a.json()["pid"] for a in answers}
                return pids

        pids = asyncio.run(many())
        assert len(pids) == 2, pids
        body = httpx.post(url + "/v1/sample", json={"n": 2, "seed": 1}).json()
        assert len(body["images"]) == 2


def test_tls_is_passed_through_to_uvicorn(exported_repo, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip("openssl could not make a test certificate")
    flags = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--log-level", "warning")
    with running_service(exported_repo, *flags, scheme="https") as url:
        assert url.startswith("https://")
        answer = httpx.get(url + "/healthz", verify=str(cert))
        assert answer.json() == {"status": "alive"}
    # Mutual TLS: with a CA bundle, a client without a certificate it signed is refused.
    mutual = (*flags, "--ssl-ca-certs", str(cert))
    with_cert = ssl.create_default_context(cafile=str(cert))
    with_cert.load_cert_chain(str(cert), str(key))
    with running_service(exported_repo, *mutual, scheme="https", verify=with_cert) as url:
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", verify=str(cert))
        assert httpx.get(url + "/healthz", verify=with_cert).json() == {"status": "alive"}


def test_a_port_in_use_is_one_line(exported_repo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "serving", "--repo", str(exported_repo), "--port", str(port)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ},
        )
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot listen on") and "--port" in result.stderr
    assert "Traceback" not in result.stderr
