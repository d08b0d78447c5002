"""``make bench``: onnxruntime's ceiling vs the HTTP service, with batching on and off.

Prints one JSON document and writes it, with a plot, under ``artifacts/bench/``.
Everything runs on this machine: the service and the load generator share its cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

from benchmarks import reliability
from benchmarks.loadgen import HEALTHZ, http_request, run_load, tree_cpu_seconds
from serving.config import ServingConfig
from vae_contract import DECODER, ENCODER, IMAGE_SHAPE, IMAGES, NPY_MEDIA_TYPE, onnx_versions
from vae_runtime import OnnxModel

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
CONCURRENCY = (1, 8, 64)
DELAYS_MS = (0.0, 0.5, 1.0, 2.0, 5.0)


def raw_throughput(model: OnnxModel, batch: int, seconds: float = 1.0, repeats: int = 3) -> float:
    """Items per second of back-to-back onnxruntime calls at one batch size.

    The best of ``repeats`` runs: a ceiling is what the machine can do, and on this
    shared 2-core machine single runs of two threads varied by up to 40 %.
    """
    inputs = np.random.default_rng(0).random((batch, *model.item_shape), dtype=np.float32)
    model.run(inputs)
    best = 0.0
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / repeats:
            model.run(inputs)
            calls += 1
        best = max(best, calls * batch / (time.perf_counter() - started))
    return best


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """``python -m serving`` in a subprocess, quiet, ready when the constructor returns."""

    def __init__(self, repo: str, *flags: str, cwd: str | Path | None = None):
        """``cwd``: serve the source tree found there (another revision, for an A/B)."""
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving",
                "--repo",
                repo,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url("/readyz"), timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError("the service did not become ready")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def cpu_seconds(self) -> float:
        """User + system CPU the service has used so far, worker processes included."""
        return tree_cpu_seconds(self.process.pid)

    def batches(self, model: str) -> tuple[float, float, float]:
        """Rows and onnxruntime calls so far, and the CPU seconds of those calls."""
        text = urllib.request.urlopen(self.url("/metrics")).read().decode()
        label = re.escape(f'{{model="{model}"}}')
        names = ("vae_batch_size_sum", "vae_batch_size_count", "vae_inference_cpu_seconds_total")
        found = [re.search(rf"{name}{label} (\S+)", text) for name in names]
        return tuple(float(match[1]) if match else 0.0 for match in found)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def workloads(images: np.ndarray) -> dict[str, tuple[str, bytes, int]]:
    """(model, pre-encoded request, items per request). Single items are the hardest case
    for a service and the best case for batching; 16 per request is a client mini-batch."""

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    one = images[:1]
    return {
        "encode_json": (
            ENCODER,
            http_request("/v1/encode", orjson.dumps({IMAGES: one.tolist()})),
            1,
        ),
        "encode_npy": (
            ENCODER,
            http_request("/v1/encode", npy(one), NPY_MEDIA_TYPE),
            1,
        ),
        "sample_json": (DECODER, http_request("/v1/sample", b'{"n": 1}'), 1),
        "encode_npy_x16": (
            ENCODER,
            http_request("/v1/encode", npy(images[:16]), NPY_MEDIA_TYPE),
            16,
        ),
        "sample_npy_x16": (
            DECODER,
            http_request("/v1/sample?format=npy", b'{"n": 16}'),
            16,
        ),
    }


V2_INFER = f"/v2/models/{ENCODER}/infer"
FLOOR_CONCURRENCY = (1, 64)
TARGETS = {"encode_json": 2.5, "encode_npy": 1.5}


def v2_requests(image: np.ndarray) -> dict[str, bytes]:
    """One image as an Open Inference Protocol request: JSON data, and binary tensor data."""
    tensor = {"name": IMAGES, "shape": [1, *IMAGE_SHAPE], "datatype": "FP32"}
    as_json = orjson.dumps({"inputs": [{**tensor, "data": image.ravel().tolist()}]})
    header = orjson.dumps(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": image.nbytes}}]}
    )
    binary = http_request(V2_INFER, header + image.tobytes(), "application/octet-stream")
    binary = binary.replace(
        b"\r\n\r\n", f"\r\nInference-Header-Content-Length: {len(header)}\r\n\r\n".encode(), 1
    )
    return {
        "encode_v2_json": http_request(V2_INFER, as_json),
        "encode_v2_binary": binary,
    }


def ort_cpu_per_image(model: OnnxModel, batch: int, seconds: float = 1.5) -> float:
    """onnxruntime's own CPU (all its threads) per image at one batch size, in µs."""
    inputs = np.random.default_rng(0).random((batch, *model.item_shape), dtype=np.float32)
    model.run(inputs)
    calls, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        model.run(inputs)
        calls += 1
    return (time.process_time() - cpu) / (calls * batch) * 1e6


def ort_cold_cpu_per_image(model: OnnxModel, calls: int = 200) -> float:
    """onnxruntime's CPU for one image after the CPU's caches were refilled with other
    data (64 MB written between calls), in µs: what one request costs it when it finds
    the service idle and its weights gone from the caches."""
    inputs = np.random.default_rng(0).random((1, *model.item_shape), dtype=np.float32)
    other = np.zeros(64_000_000 // 8)
    model.run(inputs)
    cpu = 0.0
    for _ in range(calls):
        other += 1.0
        started = time.process_time()
        model.run(inputs)
        cpu += time.process_time() - started
    return cpu / calls * 1e6


def floor_ratios(
    repo: str,
    version: int,
    requests: dict[str, bytes],
    model: OnnxModel,
    seconds: float,
    repeats: int = 5,
) -> dict:
    """CPU per request against the floor, on one server, interleaved over ``repeats``.

    The floor of a request is what no handler can avoid: one ``GET /healthz`` round
    trip on the same server (HTTP, routing, the answer) plus onnxruntime's own CPU per
    image at the batch size the service reached for that workload, measured here, alone.
    Each repeat measures ``/healthz``, then each workload followed at once by onnxruntime
    alone at the batch that workload reached, and gives each workload its own ratio:
    the ratio compares figures taken seconds apart, not minutes, and the machine's speed
    drifts by up to ±30 % between runs. The goals are judged on the median ratio.
    Beside it: onnxruntime's CPU per image inside the service (its metric
    ``vae_inference_cpu_seconds``), where it runs beside the event loop and its caches
    are not its own. At one client, also its CPU for one image with cold caches
    (:func:`ort_cold_cpu_per_image`), which is what every request there meets.
    """
    points: dict[tuple[int, str], list[dict]] = {}
    healthz: dict[int, list[float]] = {c: [] for c in FLOOR_CONCURRENCY}
    service = Service(repo)
    try:
        for _ in range(repeats):
            for c in FLOOR_CONCURRENCY:
                point = measure(service, version, HEALTHZ, ENCODER, c, seconds)
                healthz[c].append(point["server_cpu_us_per_request"])
                for name, request in requests.items():
                    point = measure(service, version, request, ENCODER, c, seconds)
                    cpu, inside = point["server_cpu_us_per_request"], point["ort_cpu_us_per_item"]
                    batch = max(1, round(point["mean_batch"] or 1))
                    alone = ort_cpu_per_image(model, batch, seconds=1.0)
                    points.setdefault((c, name), []).append(
                        {
                            "cpu": cpu,
                            "batch": batch,
                            "alone": alone,
                            "inside": inside or 0.0,
                            "ratio": cpu / (healthz[c][-1] + alone),
                            "ratio_inside": cpu / (healthz[c][-1] + (inside or alone)),
                        }
                    )
    finally:
        service.close()
    cold = ort_cold_cpu_per_image(model)  # one image with cold caches (batch 1 only)
    report = {}
    for c in FLOOR_CONCURRENCY:
        rows: dict = {"healthz_cpu_us": round(float(np.median(healthz[c])), 1)}
        for name in requests:
            got = {key: [p[key] for p in points[c, name]] for key in points[c, name][0]}
            ratios = got["ratio"]
            rows[name] = {
                "cpu_us_per_request": round(float(np.median(got["cpu"])), 1),
                "cpu_us_range": [min(got["cpu"]), max(got["cpu"])],
                "batch_reached": round(float(np.median(got["batch"]))),
                "ort_cpu_us_per_image": round(float(np.median(got["alone"])), 1),
                "ratio_to_floor": round(float(np.median(ratios)), 2),
                "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
                "ort_in_service_cpu_us_per_image": round(float(np.median(got["inside"])), 1),
                "ratio_to_floor_with_ort_in_service": round(
                    float(np.median(got["ratio_inside"])), 2
                ),
            }
            if rows[name]["batch_reached"] == 1:
                rows[name]["ort_cold_cpu_us_per_image"] = round(cold, 1)
        rows["goals"] = {
            f"{name} <= {limit}x floor": rows[name]["ratio_to_floor"] <= limit
            for name, limit in TARGETS.items()
        }
        report[f"clients_{c}"] = rows
    return report


def workers_comparison(repo: str, version: int, requests: dict[str, bytes], seconds: float) -> dict:
    """1 against 2 worker processes (each with 1 onnxruntime thread), 64 clients, twice."""
    runs: dict[str, dict[str, list[dict]]] = {}
    for _ in range(2):
        for workers in ("1", "2"):
            service = Service(repo, "--workers", workers, "--intra-op-threads", "1")
            try:
                for name, request in requests.items():
                    point = measure(service, version, request, ENCODER, 64, seconds)
                    runs.setdefault(f"workers_{workers}", {}).setdefault(name, []).append(point)
            finally:
                service.close()
    return {
        label: {
            name: {
                "requests_per_s": [p["requests_per_s"] for p in points],
                "p50_ms": [p["p50_ms"] for p in points],
                "server_cpu_us_per_request": [p["server_cpu_us_per_request"] for p in points],
            }
            for name, points in table.items()
        }
        for label, table in runs.items()
    }


def measure(
    service: Service,
    version: int,
    request: bytes,
    model: str,
    concurrency: int,
    seconds: float,
    items: int = 1,
) -> dict:
    label = f"{model}/{version}"
    before, cpu_before = service.batches(label), service.cpu_seconds()
    result = run_load(service.port, request, concurrency, seconds, warmup=0.0)
    after, cpu_after = service.batches(label), service.cpu_seconds()
    rows, calls, ort_cpu = (a - b for a, b in zip(after, before, strict=True))
    summary = result.summary(items)
    summary["mean_batch"] = round(rows / calls, 2) if calls else None
    # onnxruntime's CPU inside the service, where it runs beside the event loop.
    summary["ort_cpu_us_per_item"] = round(ort_cpu / rows * 1e6, 1) if rows else None
    # Where the machine's time went: the service's CPU per request (HTTP, validation,
    # onnxruntime), and the load generator's, which shares the same cores.
    summary["server_cpu_us_per_request"] = round(
        (cpu_after - cpu_before) / max(1, result.requests) * 1e6, 1
    )
    return summary


def service_sections(report: dict, repo: str, seconds: float, loads: dict, version: int) -> None:
    """Every workload at 1, 8 and 64 clients, batching on and off; the max-delay sweep."""
    report["service"] = {}
    for mode, flags in (("batching_on", ()), ("batching_off", ("--no-batching",))):
        service = Service(repo, *flags)
        try:
            report["service"][mode] = {
                name: [
                    measure(service, version, request, model, c, seconds, items)
                    for c in CONCURRENCY
                ]
                for name, (model, request, items) in loads.items()
            }
        finally:
            service.close()
        print(json.dumps({mode: report["service"][mode]}), file=sys.stderr, flush=True)

    report["max_delay_sweep_encode_json"] = {}
    model, request, _ = loads["encode_json"]
    for delay in DELAYS_MS:
        service = Service(repo, "--max-delay-ms", str(delay))
        try:
            report["max_delay_sweep_encode_json"][str(delay)] = [
                measure(service, version, request, model, c, seconds) for c in (1, 64)
            ]
        finally:
            service.close()


def reliability_section(repo: str, seconds: float) -> dict:
    """What a normal client gets beside costly ones, under overload, and what clients
    that never read cost in memory (see benchmarks/reliability.py)."""

    def service(*flags: str) -> Service:
        return Service(repo, *flags)

    section = {
        "stall": reliability.stall(service, seconds),
        "overload": reliability.overload(service, seconds),
        "unread_answers": reliability.unread_answers(service),
    }
    print(json.dumps({"reliability": section}), file=sys.stderr, flush=True)
    return section


def measured_model(repo: str | Path) -> dict:
    """Which model a report measured, from the manifests of the latest complete version
    (the one the service loads): figures without it cannot be compared across runs."""
    from vae_contract.repository import read_manifest, scan_onnx

    version = scan_onnx(repo).choose()
    manifest = read_manifest(version, ENCODER)
    source = manifest.get("source_run") or {}
    config = source.get("config") or {}
    return {
        "repository": str(repo),
        "models": [ENCODER, DECODER],
        "version": version.number,
        "source_run": source.get("run"),
        "latent_dim": manifest["latent_dim"],
        "dataset": (config.get("data") or {}).get("dataset"),
        "architecture": (config.get("model") or {}).get("architecture"),
        "exported": manifest.get("created"),
    }


def describe_model(model: dict) -> str:
    """One line for a plot title: models, version, source run, dataset and latent size."""
    return (
        f"{'/'.join(model['models'])} v{model['version']} from run {model['source_run']} "
        f"({model['dataset']}, {model['architecture']}, latent {model['latent_dim']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument(
        "--repo",
        default="artifacts/models",
        help="model repository; its latest complete version is measured (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="per measurement (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        default="artifacts/bench",
        help="folder for serving.json and serving.png (floor.json, reliability.json with "
        "--floor-only, --reliability-only) (default: %(default)s)",
    )
    parser.add_argument(
        "--floor-only",
        action="store_true",
        help="only the floor ratios and 1 vs 2 workers (a few minutes)",
    )
    parser.add_argument(
        "--reliability-only",
        action="store_true",
        help="only the stall, overload and unread-answer figures (a few minutes)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = measured_model(args.repo)
    if args.reliability_only:
        report = {"model": model, "reliability": reliability_section(args.repo, args.seconds)}
        (out / "reliability.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return 0

    found = onnx_versions(args.repo)
    cpus = os.cpu_count() or 1
    service_threads = ServingConfig().threads
    report: dict = {
        "model": model,
        "machine": {"cpus": cpus},
        "seconds_per_point": args.seconds,
        "service_intra_op_threads": service_threads,
    }
    # The ceiling: onnxruntime alone with every core; and with the service's own thread
    # setting (it leaves a core to the HTTP loop), which bounds what batching can win.
    ceilings = {}
    for label, threads in (("all_cores", cpus), ("service_threads", service_threads)):
        models = {name: OnnxModel(v[max(v)], name, max(v), threads) for name, v in found.items()}
        ceilings[label] = models
        if args.floor_only:
            continue
        report[f"raw_onnxruntime_items_per_s_{label}"] = {
            name: {str(b): round(raw_throughput(model, b, seconds=1.5), 1) for b in BATCH_SIZES}
            for name, model in models.items()
        }
        print(json.dumps(report[f"raw_onnxruntime_items_per_s_{label}"]), file=sys.stderr)
    version = ceilings["all_cores"][ENCODER].version

    images = (np.random.default_rng(0).random((16, *IMAGE_SHAPE)) < 0.13).astype(np.float32)
    loads = workloads(images)
    if not args.floor_only:
        service_sections(report, args.repo, args.seconds, loads, version)

    floor_requests = {
        "encode_json": loads["encode_json"][1],
        "encode_npy": loads["encode_npy"][1],
        **v2_requests(images[0]),
    }
    model = ceilings["service_threads"][ENCODER]
    report["floor"] = floor_ratios(args.repo, version, floor_requests, model, args.seconds)
    print(json.dumps({"floor": report["floor"]}), file=sys.stderr, flush=True)
    report["workers"] = workers_comparison(
        args.repo,
        version,
        {k: floor_requests[k] for k in ("encode_json", "encode_npy")},
        args.seconds,
    )
    print(json.dumps({"workers": report["workers"]}), file=sys.stderr, flush=True)
    if not args.floor_only:
        report["reliability"] = reliability_section(args.repo, args.seconds)

    if args.floor_only:
        (out / "floor.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return 0
    report["targets"] = targets(report, ceilings)
    (out / "serving.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / "serving.png")
    print(json.dumps(report, indent=2))
    return 0


def targets(report: dict, ceilings: dict[str, dict[str, OnnxModel]]) -> dict:
    """The issue's targets, each with the figures it compares.

    The service is compared with onnxruntime alone at the batch size it actually ran
    (its mean rows per call at 64 clients), on all cores (the machine's ceiling) and with
    the service's own thread count. ``raw_batching_gain`` is onnxruntime's own speed-up
    from batch 1 to that batch: batching on vs off can win no more than that.
    """
    on, off = report["service"]["batching_on"], report["service"]["batching_off"]
    checks = {}
    for name, points in on.items():
        model_name = ENCODER if name.startswith("encode") else DECODER
        at64 = points[-1]
        batch = max(1, round(at64["mean_batch"] or 1))
        raw = raw_throughput(ceilings["all_cores"][model_name], batch, seconds=3)
        same_threads = ceilings["service_threads"][model_name]
        raw_same = raw_throughput(same_threads, batch, seconds=3)
        raw_one = raw_throughput(same_threads, 1, seconds=3)
        checks[name] = {
            "service_items_per_s_c64": at64["items_per_s"],
            "effective_batch_c64": at64["mean_batch"],
            "raw_items_per_s_at_that_batch": round(raw, 1),
            "fraction_of_raw": round(at64["items_per_s"] / raw, 3),
            "raw_items_per_s_at_that_batch_service_threads": round(raw_same, 1),
            "fraction_of_raw_service_threads": round(at64["items_per_s"] / raw_same, 3),
            "speedup_vs_batching_off_c64": round(
                at64["items_per_s"] / off[name][-1]["items_per_s"], 2
            ),
            "raw_batching_gain": round(raw_same / raw_one, 2),
            "p99_ms_c1": on[name][0]["p99_ms"],
        }
    names = list(checks)
    checks["goals"] = {
        "fraction_of_raw >= 0.8": {k: checks[k]["fraction_of_raw"] >= 0.8 for k in names},
        "speedup >= 3": {k: checks[k]["speedup_vs_batching_off_c64"] >= 3 for k in names},
        "encode p99 at c1 < 5 ms": on["encode_json"][0]["p99_ms"] < 5,
    }
    return checks


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 5.2))
    for mode, style in (("batching_on", "-"), ("batching_off", "--")):
        for name, points in report["service"][mode].items():
            label = f"{name} ({mode.replace('_', ' ')})"
            for axis, key in ((left, "items_per_s"), (right, "p99_ms")):
                axis.plot(CONCURRENCY, [p[key] for p in points], style, marker="o", label=label)
    for name, table in report["raw_onnxruntime_items_per_s_all_cores"].items():
        left.axhline(table["64"], color="grey", linewidth=0.8, linestyle=":")
        left.text(1, table["64"], f"raw {name} @64", fontsize=7, va="bottom")
    for axis, label in ((left, "items / s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
    figure.suptitle(
        f"keras-vae serving on a {report['machine']['cpus']}-core machine: "
        f"{describe_model(report['model'])}\n"
        "(solid: batching on, dashed: off; dotted: onnxruntime alone at batch 64)"
    )
    figure.tight_layout(rect=(0, 0.14, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
