"""Start the real service in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import REPO


def pixels(splits, n: int) -> np.ndarray:
    """The first ``n`` test images as float32 [n, 28, 28, 1] in [0, 1]."""
    return (splits.test_images[:n].astype(np.float32) / 255.0).reshape(n, 28, 28, 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(
    process: subprocess.Popen, url: str, timeout: float = 60, verify: object = False
) -> None:
    """Until /readyz answers 200; an error if the process exits or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with code {process.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"service not ready within {timeout:g} s")
        time.sleep(0.2)


@contextmanager
def running_service(
    repo: Path,
    *flags: str,
    log: Path | None = None,
    scheme: str = "http",
    verify: object = False,
):
    """Yield the base URL of ``python -m serving`` once /readyz says ready."""
    port = free_port()
    stderr = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--repo", str(repo), "--port", str(port), *flags],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        wait_ready(process, url, verify=verify)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        if log:
            stderr.close()
