"""Differential privacy for a bucket's counts: OpenDP's discrete Laplace (geometric) mechanism.

OpenDP is optional (``pip install 'callveil[dp]'``) and imported only when noise is on. Its
Laplace measurement on integer vectors is a "contrib" feature, enabled here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

MECHANISM = "discrete_laplace"


class NoiseError(Exception):
    """Noise cannot be added; the message says what to install or change."""


@dataclass(frozen=True, slots=True)
class Noised:
    values: tuple[int, ...]
    scale: float  # of the discrete Laplace noise on each value
    library: str  # e.g. "opendp 0.16.0"


def discrete_laplace(values: Sequence[int], sensitivity: int, epsilon: float) -> Noised:
    """``values`` plus discrete Laplace noise making them ``epsilon``-DP.

    ``sensitivity`` is the most one call can change ``values`` in L1 distance; the scale is the
    smallest one OpenDP proves spends at most ``epsilon`` for it.
    """
    if sensitivity < 1 or not epsilon > 0:
        raise ValueError("noise needs a sensitivity of at least 1 and a positive epsilon")
    try:
        import opendp.prelude as dp
    except ImportError:
        raise NoiseError(
            "aggregates.dp is on but OpenDP is not installed: pip install 'callveil[dp]', "
            "or set aggregates.dp = false"
        ) from None
    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
    scale = dp.binary_search_param(
        lambda s: dp.m.make_laplace(*space, scale=s), d_in=sensitivity, d_out=epsilon
    )
    measurement = dp.m.make_laplace(*space, scale=scale)
    spent = measurement.map(sensitivity)
    if spent > epsilon:  # binary_search_param promises this; a release must never rely on it
        raise NoiseError(f"OpenDP calibrated a mechanism spending {spent} > epsilon {epsilon}")
    noisy = measurement([int(v) for v in values])
    return Noised(
        tuple(int(v) for v in noisy),
        float(scale),
        f"opendp {metadata.version('opendp')}",
    )
