"""Paired timing: how much faster one model runs than another, on a shared machine.

The machines this runs on are shared (here 2 cores and other agents' jobs), so the two
models are never timed one after the other: in each round both run the same number of
calls back to back, in alternating order, and the speed-up is the median over rounds of
the ratio of the two times. A burst of load slows both sides of a round alike, and the
median drops the rounds it hit unevenly. Each session runs on one thread
(``intra_op_num_threads=1``), as a service worker per core would, so that the figure
compares the kernels rather than how well each one spreads over cores.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

ROUNDS = 21
BLOCK_SECONDS = 0.05  # each side of a round runs for about this long
METHOD = (
    f"onnxruntime CPU, one thread per session (intra_op_num_threads=1), sessions as the "
    f"service builds them; {ROUNDS} rounds, each running both models the same number of "
    f"calls (about {BLOCK_SECONDS * 1000:g} ms each) back to back in alternating order; "
    "speed-up = median over rounds of float32 time / int8 time; ms = median per call"
)


@dataclass
class Timing:
    """One network at one batch size: median milliseconds per call, and the speed-up."""

    batch: int
    float32_ms: float
    int8_ms: float
    speedup: float
    calls_per_round: int

    def to_dict(self) -> dict:
        return asdict(self)


def _seconds(run: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - started) / calls


def paired_timing(
    batch: int,
    reference: Callable[[], object],
    candidate: Callable[[], object],
    rounds: int = ROUNDS,
) -> Timing:
    """Time ``reference`` (float32) against ``candidate`` (int8), interleaved."""
    for run in (reference, candidate, reference, candidate):  # first calls allocate
        run()
    calls = max(1, math.ceil(BLOCK_SECONDS / max(_seconds(reference, 1), 1e-6)))
    ratios, ours, theirs = [], [], []
    for index in range(rounds):
        if index % 2 == 0:
            first = _seconds(reference, calls)
            second = _seconds(candidate, calls)
        else:
            second = _seconds(candidate, calls)
            first = _seconds(reference, calls)
        ours.append(first)
        theirs.append(second)
        ratios.append(first / second)
    return Timing(
        batch=batch,
        float32_ms=round(statistics.median(ours) * 1000, 4),
        int8_ms=round(statistics.median(theirs) * 1000, 4),
        speedup=round(statistics.median(ratios), 3),
        calls_per_round=calls,
    )
