"""``make bench-peers``: keras-vae against other ways to serve the same ONNX encoder.

Every server answers single-image JSON encodes of the same ``model.onnx`` with
onnxruntime on one intra-op thread, under the same load generator, at 1 and 64
concurrent clients. The peers (PyTriton, LitServe, a naive FastAPI service) live in
their own virtualenv, ``.venv-peers``, as scripts under ``benchmarks/peers/`` (a folder
without ``__init__.py``, so that ``benchmarks.peers`` still names this module); keras-vae
runs from this interpreter (the main ``.venv``). Repeats are interleaved, each one
starting every server in turn (in a rotated order), so that a slow spell of this shared
2-core machine hits every server alike; only one server runs at a time, so that no idle
peer takes CPU from the one measured. Each answer is checked against onnxruntime run
here before any load, so that a broken peer is reported rather than measured.

Prints one JSON document and writes it to ``artifacts/bench/peers.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import onnxruntime as ort
import orjson

from benchmarks.loadgen import HEALTHZ, http_request, run_load, tree_cpu_seconds
from vae_contract import ENCODER, IMAGE_SHAPE, IMAGES, Z_MEAN, choose_version, onnx_versions

PEERS_DIR = Path(__file__).with_name("peers")
CONCURRENCY = (1, 64)
ATOL = 1e-4
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
# keras-vae's /v1/encode is the baseline of every peer; PyTriton is also held against
# our Open Inference Protocol endpoint, which answers the very same request.
BASELINE, BASELINE_V2 = "keras_vae_v1", "keras_vae_v2"
GOAL_VS_PYTHON_PEERS, GOAL_VS_PYTRITON = 5.0, 1.0
# keras-vae's GET /healthz: no body, no inference. Its req/s over a peer's encodes bounds
# what any encode handler on our server could reach against that peer.
CEILING = "keras_vae_healthz"


@dataclass(frozen=True)
class Endpoint:
    """One measured workload: a pre-encoded request and how to find z_mean in its answer
    (None: a reference request, whose answer holds none)."""

    label: str
    request: bytes
    z_mean: Callable[[dict], list] | None


@dataclass(frozen=True)
class Peer:
    """A server to start: its command, its readiness URL path, the endpoints it is measured on."""

    name: str
    command: list[str]
    ready_path: str
    endpoints: tuple[Endpoint, ...]
    ports: int = 1  # consecutive free ports it needs (Triton: HTTP, gRPC, metrics)


def v1_body(image: np.ndarray) -> bytes:
    """Our API's and LitServe's JSON: ``{"images": [image nested 28x28x1]}``."""
    return orjson.dumps({IMAGES: image.tolist()})


def v2_body(image: np.ndarray) -> bytes:
    """KServe v2 JSON: the tensor flat in row-major order, its shape beside it."""
    tensor = {"name": IMAGES, "shape": list(image.shape), "datatype": "FP32"}
    return orjson.dumps({"inputs": [{**tensor, "data": image.ravel().tolist()}]})


def v2_z_mean(answer: dict) -> list:
    return next(o["data"] for o in answer["outputs"] if o["name"] == Z_MEAN)


def v1_z_mean(answer: dict) -> list:
    return answer[Z_MEAN]


def peers(model: Path, repo: str, peers_python: str, image: np.ndarray) -> list[Peer]:
    """The servers; ``--port`` and a free port are appended to each command at its start."""

    def script(name: str) -> list[str]:
        return [peers_python, str(PEERS_DIR / name), "--model", str(model), "--threads", "1"]

    v1 = http_request("/v1/encode", v1_body(image))
    v2 = http_request(f"/v2/models/{ENCODER}/infer", v2_body(image))
    return [
        Peer(
            "keras_vae",
            [sys.executable, "-m", "serving", "--repo", repo, "--intra-op-threads", "1"]
            + ["--log-level", "warning"],
            "/readyz",
            (
                Endpoint(BASELINE, v1, v1_z_mean),
                Endpoint(BASELINE_V2, v2, v2_z_mean),
                Endpoint(CEILING, HEALTHZ, None),
            ),
        ),
        Peer(
            "pytriton",
            script("serve_pytriton.py"),
            # Not /v2/health/ready: PyTriton loads the model after Triton says it is ready.
            f"/v2/models/{ENCODER}/ready",
            (Endpoint("pytriton_v2", v2, v2_z_mean),),
            ports=3,
        ),
        Peer(
            "litserve",
            script("serve_litserve.py"),
            "/health",
            (Endpoint("litserve", http_request("/predict", v1_body(image)), v1_z_mean),),
        ),
        Peer(
            "fastapi",
            script("serve_fastapi.py"),
            "/healthz",
            (Endpoint("fastapi", v1, v1_z_mean),),
        ),
    ]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            first = sock.getsockname()[1]
        if first + count <= 65536 and all(_is_free(first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"found no {count} consecutive free ports")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Server:
    """One peer in its own subprocess and process group, with its output in a temp file."""

    def __init__(self, peer: Peer, log: IO[bytes]):
        self.peer = peer
        self.port = free_ports(peer.ports)
        self.log = log
        self.process = subprocess.Popen(
            [*peer.command, "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until its readiness path answers 200; its own words if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"exited with code {self.process.returncode} before ready:\n{self.output()}"
                )
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.url(self.peer.ready_path), timeout=1)
                return
            time.sleep(0.25)
        raise RuntimeError(f"not ready after {timeout:.0f} s:\n{self.output()}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def output(self, chars: int = 3000) -> str:
        """The end of what the server printed: where its reason for failing is."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def post(self, endpoint: Endpoint) -> dict:
        head, body = endpoint.request.split(b"\r\n\r\n", 1)
        path = head.split(b" ", 2)[1].decode()
        request = urllib.request.Request(self.url(path), body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{path} answered {error.code}: {error.read()[:500]!r}") from error

    def close(self) -> None:
        """SIGTERM to the server first, so that it can shut down its own children (PyTriton
        removes its workspace), then SIGKILL to whatever is left of its process group."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def running(peer: Peer) -> Iterator[Server]:
    """The peer started and ready; stopped on leaving, whatever happened."""
    with tempfile.TemporaryFile() as log:
        server = Server(peer, log)
        try:
            server.wait_ready()
            yield server
        finally:
            server.close()


def verify(server: Server, endpoint: Endpoint, expected: np.ndarray) -> None:
    """The peer's z_mean for the benchmark image equals onnxruntime's here within ATOL."""
    if endpoint.z_mean is None:
        return
    got = np.asarray(endpoint.z_mean(server.post(endpoint)), dtype=np.float32)
    got = got.reshape(expected.shape)
    worst = float(np.max(np.abs(got - expected)))
    if worst > ATOL:
        raise RuntimeError(f"{endpoint.label}: {Z_MEAN} differs from onnxruntime by {worst:.2e}")


def measure(server: Server, endpoint: Endpoint, concurrency: int, seconds: float, warmup: float):
    """One point: a discarded warm-up run, then the measured run between two CPU readings."""
    if warmup > 0:
        run_load(server.port, endpoint.request, concurrency, warmup, warmup=0.0)
    cpu_before = tree_cpu_seconds(server.process.pid)
    result = run_load(server.port, endpoint.request, concurrency, seconds, warmup=0.0)
    cpu = tree_cpu_seconds(server.process.pid) - cpu_before
    summary = result.summary()
    summary["server_cpu_us_per_request"] = round(cpu / max(1, result.requests) * 1e6, 1)
    return summary


def run_peer(peer: Peer, expected: np.ndarray, args: argparse.Namespace) -> dict[str, list]:
    """Start, verify, measure every endpoint at every concurrency, stop."""
    with running(peer) as server:
        for endpoint in peer.endpoints:
            verify(server, endpoint, expected)
        return {
            e.label: [measure(server, e, c, args.seconds, args.warmup) for c in CONCURRENCY]
            for e in peer.endpoints
        }


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "range": [min(values), max(values)]}


def aggregate(runs: dict[str, list[list[dict]]]) -> dict:
    """Per endpoint and concurrency: median and range over the repeats."""
    keys = ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request", "errors")
    table = {}
    for label, repeats in runs.items():
        table[label] = {
            str(c): {k: spread([r[i][k] for r in repeats]) for k in keys}
            for i, c in enumerate(CONCURRENCY)
        }
    return table


def paired_ratio(runs: dict, label: str, baseline: str | list[str], i: int) -> dict | None:
    """``label``'s req/s over the baseline's (the best of several), repeat by repeat.

    Paired within a repeat, where both ran minutes apart at most; the median and range
    of those ratios. None when either side has no runs.
    """
    baselines = [baseline] if isinstance(baseline, str) else baseline
    if not runs.get(label) or not all(runs.get(b) for b in baselines):
        return None
    count = min(len(runs[x]) for x in (label, *baselines))
    ratios = [
        runs[label][r][i]["requests_per_s"]
        / max(runs[b][r][i]["requests_per_s"] for b in baselines)
        for r in range(count)
    ]
    return {
        "median": round(statistics.median(ratios), 3),
        "range": [round(min(ratios), 3), round(max(ratios), 3)],
    }


def ratios_and_goals(runs: dict, failures: dict) -> tuple[dict, dict]:
    """Each peer's req/s over keras-vae's, and the issue's goals (keras-vae's req/s over
    the peer's) at each concurrency; a goal is met when the median ratio reaches it."""
    compare = {
        "litserve": [BASELINE],
        "fastapi": [BASELINE],
        "pytriton_v2": [BASELINE, BASELINE_V2],
    }
    ratios: dict = {}
    for label, bases in compare.items():
        ratios[label] = {}
        for base in bases:
            ratios[label][f"over_{base}"] = {
                str(c): paired_ratio(runs, label, base, i) for i, c in enumerate(CONCURRENCY)
            }
    goals = {}
    for i, c in enumerate(CONCURRENCY):
        vs_python = paired_ratio(runs, BASELINE, ["litserve", "fastapi"], i)
        name = f"{BASELINE} >= {GOAL_VS_PYTHON_PEERS:g}x the better of litserve and fastapi"
        goal = {name: _goal(vs_python, GOAL_VS_PYTHON_PEERS)}
        goal[name]["ceiling"] = {
            "keras_vae_healthz_over_peer": paired_ratio(runs, CEILING, ["litserve", "fastapi"], i),
            "why": "GET /healthz on our server (no body, no inference) against the peer's "
            "encodes: no encode handler on our server can reach a higher ratio",
        }
        for ours in (BASELINE, BASELINE_V2):
            vs_triton = _goal(paired_ratio(runs, ours, "pytriton_v2", i), GOAL_VS_PYTRITON)
            if vs_triton["met"] is None and "pytriton" in failures:
                vs_triton["why_unmeasured"] = "pytriton failed: see failures.pytriton"
            goal[f"{ours} >= {GOAL_VS_PYTRITON:g}x pytriton_v2"] = vs_triton
        goals[f"concurrency_{c}"] = goal
    return ratios, goals


def _goal(ratio: dict | None, target: float) -> dict:
    met = None if ratio is None else ratio["median"] >= target
    return {"met": met, "keras_vae_over_peer": ratio}


def peer_versions(peers_python: str) -> dict:
    """The peers' package versions, as installed in their virtualenv."""
    code = (
        "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
        "('nvidia-pytriton', 'litserve', 'fastapi', 'uvicorn', 'onnxruntime', 'numpy')}))"
    )
    done = subprocess.run([peers_python, "-c", code], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-500:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    parser.add_argument("--repo", default="artifacts/models")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=0.5, help="discarded run before each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers-python", default=".venv-peers/bin/python")
    parser.add_argument(
        "--only", nargs="+", choices=["keras_vae", "pytriton", "litserve", "fastapi"]
    )
    parser.add_argument("--out", default="artifacts/bench")
    args = parser.parse_args(argv)
    if not Path(args.peers_python).is_file():
        parser.error(f"{args.peers_python} does not exist; run `make bench-peers`, which makes it")

    versions = onnx_versions(args.repo)[ENCODER]
    version = choose_version(ENCODER, versions, None)  # the latest, as keras-vae serves
    model = versions[version].resolve()
    # The image every server encodes, and what onnxruntime here answers for it.
    image = (np.random.default_rng(0).random((1, *IMAGE_SHAPE)) < 0.13).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = session.run([Z_MEAN], {IMAGES: image})[0]

    servers = peers(model, args.repo, args.peers_python, image)
    servers = [p for p in servers if not args.only or p.name in args.only]
    runs: dict[str, list[list[dict]]] = {e.label: [] for p in servers for e in p.endpoints}
    failures: dict[str, str] = {}
    for repeat in range(args.repeats):
        for peer in servers[repeat % len(servers) :] + servers[: repeat % len(servers)]:
            if peer.name in failures:
                continue
            print(f"repeat {repeat + 1}/{args.repeats}: {peer.name}", file=sys.stderr, flush=True)
            try:
                for label, points in run_peer(peer, expected, args).items():
                    runs[label].append(points)
            except Exception as error:  # a broken peer is reported, the others still run
                failures[peer.name] = f"{type(error).__name__}: {error}"
                print(f"  {peer.name} failed: {failures[peer.name]}", file=sys.stderr)

    ratios, goals = ratios_and_goals(runs, failures)
    report = {
        "machine": {"cpus": os.cpu_count()},
        "model": {"path": str(model), "version": version},
        "seconds_per_point": args.seconds,
        "warmup_s": args.warmup,
        "repeats": args.repeats,
        "concurrency": list(CONCURRENCY),
        "onnxruntime_intra_op_threads": 1,
        "peer_versions": peer_versions(args.peers_python),
        "results": aggregate({k: v for k, v in runs.items() if v}),
        "peer_over_keras_vae_requests_per_s": ratios,
        "goals": goals,
        "failures": failures,
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    (out / "peers.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
