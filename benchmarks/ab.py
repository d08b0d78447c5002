"""Two revisions of the service side by side: ``python -m benchmarks.ab REV_A REV_B``.

A change to the request path is worth a few per cent of CPU per request, and this
machine's speed drifts by more than that between runs (README, "Serving benchmark").
So both revisions are served at once, each from a ``git archive`` copy (``.`` is the
working tree as it is), and loaded at the same moment, each by its own clients, in
several rounds: the median of the paired ratios B/A is the figure to read. (Rounds
that alternate A and B still saw the machine's speed change between the two halves:
A against itself then read anywhere from 0.9 to 1.03.) Prints JSON: per workload and
number of clients, each side's server CPU per request (median and every round) and
that ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.loadgen import HEALTHZ, run_together, tree_cpu_seconds
from benchmarks.serving import Service, v2_requests, workloads
from vae_contract import IMAGE_SHAPE

WORKING_TREE = "."


def checkout(revision: str, into: Path) -> Path:
    """A copy of ``revision``'s files to serve from (the working tree itself for ".")."""
    if revision == WORKING_TREE:
        return Path.cwd()
    folder = into / revision.replace("/", "_")
    folder.mkdir()
    archive = subprocess.run(["git", "archive", revision], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def requests() -> dict[str, bytes]:
    images = np.random.default_rng(0).random((16, *IMAGE_SHAPE), dtype=np.float32)
    chosen = {name: request for name, (_, request, _) in workloads(images).items()}
    return {"healthz": HEALTHZ, **chosen, **v2_requests(images[0])}


def cpu_per_request(
    services: list[Service], request: bytes, clients: int, seconds: float
) -> list[float]:
    """Each service's CPU per request, all of them loaded at once."""
    before = [tree_cpu_seconds(s.process.pid) for s in services]
    targets = [(s.port, request, clients) for s in services]
    results = run_together(targets, seconds, warmup=0.0)
    return [
        (tree_cpu_seconds(s.process.pid) - cpu) / max(1, r.requests) * 1e6
        for s, cpu, r in zip(services, before, results, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("a", help="git revision A (the reference), or . for the working tree")
    parser.add_argument("b", help="git revision B, or . for the working tree")
    parser.add_argument("--repo", default="artifacts/models", help="(default: %(default)s)")
    available = requests()
    parser.add_argument(
        "--loads",
        default="encode_json,encode_npy",
        help=f"comma-separated, of: {', '.join(available)}",
    )
    parser.add_argument("--clients", default="64", help="comma-separated (default: 64)")
    parser.add_argument("--rounds", type=int, default=10, help="(default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per point (default: 2)")
    args = parser.parse_args(argv)
    loads = {name: available[name] for name in args.loads.split(",")}
    clients = [int(c) for c in args.clients.split(",")]
    repo = str(Path(args.repo).resolve())
    with tempfile.TemporaryDirectory(prefix="keras-vae-ab-") as scratch:
        sides = [checkout(rev, Path(scratch)) for rev in (args.a, args.b)]
        services = [Service(repo, cwd=side) for side in sides]
        rounds: dict[tuple[str, int], list[list[float]]] = {}
        try:
            for _ in range(args.rounds):
                for c in clients:
                    for name, request in loads.items():
                        pair = rounds.setdefault((name, c), [[], []])
                        for side, cpu in zip(
                            pair, cpu_per_request(services, request, c, args.seconds), strict=True
                        ):
                            side.append(cpu)
        finally:
            for service in services:
                service.close()
    report = {"a": args.a, "b": args.b, "rounds": args.rounds, "cpu_us_per_request": {}}
    for (name, c), (a, b) in rounds.items():
        report["cpu_us_per_request"][f"{name}, {c} clients"] = {
            "a_median": round(float(np.median(a)), 1),
            "b_median": round(float(np.median(b)), 1),
            "b_over_a_paired_median": round(float(np.median(np.array(b) / np.array(a))), 3),
            "a": [round(x) for x in a],
            "b": [round(x) for x in b],
        }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
