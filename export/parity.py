"""Parity: what is deployed must compute what was trained, to within a tolerance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_vae.errors import KerasVaeError


class ParityError(KerasVaeError):
    """An exported graph disagrees with the in-memory Keras model."""


@dataclass
class ParityReport:
    network: str
    fmt: str
    examples: int
    max_abs_diff: dict[str, float]

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())


def compare(
    network: str,
    fmt: str,
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    atol: float,
) -> ParityReport:
    """Max absolute difference per output; raise if any output is missing or too far off."""
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise ParityError(f"{fmt} {network} lacks outputs {missing}; got {sorted(candidate)}")
    diffs = {}
    for name, expected in reference.items():
        got = candidate[name]
        if got.shape != expected.shape:
            raise ParityError(
                f"{fmt} {network} output {name} has shape {got.shape}, expected {expected.shape}"
            )
        diffs[name] = float(np.max(np.abs(got.astype(np.float64) - expected)))
    report = ParityReport(network, fmt, len(next(iter(reference.values()))), diffs)
    if not report.worst <= atol:  # also catches NaN
        raise ParityError(
            f"{fmt} {network} differs from the Keras model by {report.worst:.3g} "
            f"(tolerance {atol:g}); nothing was exported"
        )
    return report
