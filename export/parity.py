"""Parity: what is deployed must compute what was trained, to within a tolerance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_vae.errors import KerasVaeError

# Defaults of `make export`: |exported - Keras| <= ATOL + RTOL * |Keras|, element by element.
ATOL = 1e-4
RTOL = 1e-5


class ParityError(KerasVaeError):
    """An exported graph disagrees with the in-memory Keras model."""


@dataclass
class ParityReport:
    network: str
    fmt: str
    examples: int
    max_abs_diff: dict[str, float]


def compare(
    network: str,
    fmt: str,
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    atol: float,
    rtol: float,
) -> ParityReport:
    """Max absolute difference per output; raise if an output is missing or too far off.

    An element passes when |got - expected| <= atol + rtol * |expected| (numpy's
    ``allclose`` rule): float32 rounding grows with the magnitude of a value, and a deep
    decoder's logits for background pixels reach tens of nats, where an absolute
    tolerance alone would reject graphs that compute the same probabilities.
    """
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
        expected = expected.astype(np.float64)
        error = np.abs(got.astype(np.float64) - expected)
        diffs[name] = float(np.max(error))
        excess = error / (atol + rtol * np.abs(expected))
        worst = int(np.argmax(excess))  # NaN is the maximum, so it is caught below
        if not excess.flat[worst] <= 1.0:
            raise ParityError(
                f"{fmt} {network} output {name} differs from the Keras model by "
                f"{error.flat[worst]:.3g} where Keras gives {expected.flat[worst]:.6g} "
                f"(tolerance {atol:g} + {rtol:g}*|value|); nothing was exported"
            )
    return ParityReport(network, fmt, len(next(iter(reference.values()))), diffs)
