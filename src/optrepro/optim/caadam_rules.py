"""CaAdam's scaling rules as plain arithmetic (no torch): the factor S of a tensor from its connection count or
depth, and the effective multipliers the authors' code gives a model in reference mode. The optimizer
(optim/caadam.py) and the planner of the CaAdam study (the Adam controls at the LR that reference mode applies,
which must be planned without importing torch) share these functions.

Rules, as in remigenet/CaAdam@ce14f7e caadam/{additive,multiplicative,depth}_scaling.py (c = connection count,
c~ / c_min / c_max = median / min / max over the counted tensors, gamma = strength):
  additive        S = 1 + gamma (c~ - c)/(c~ - c_min)  if c <= c~,   1 - gamma (c - c~)/(c_max - c~)  otherwise
  multiplicative  S = gamma ** sigma, sigma = (c~ - c)/(c~ - c_min) if c <= c~, (c - c~)/(c_max - c~) otherwise
  depth           S = (1 + gamma) ** ((d_m - (1 + d)) / d_m), d = 0-based depth, d_m = number of depths
A zero denominator (c~ == c_min or c~ == c_max) gives sigma = 0, i.e. S = 1 (the authors' code gave NaN/inf).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

STRATEGIES = ("additive", "multiplicative", "depth")
CONNECTION_STRATEGIES = ("additive", "multiplicative")
# The per-strategy defaults of the authors' code, which their runs used (results/*.ipynb build the strategies
# without arguments)
DEFAULT_GAMMA = {"additive": 0.95, "multiplicative": 5.0, "depth": 1.0}


def connection_stats(counts: Iterable[float]) -> tuple[float, float, float]:
    """(c_min, median, c_max) over the counted tensors; (1, 1, 1) when there is none (the authors' fallback)."""
    counts = list(counts)
    if not counts:
        return 1.0, 1.0, 1.0
    return float(min(counts)), float(np.median(counts)), float(max(counts))


def _sigma(c: float, c_min: float, median: float, c_max: float) -> tuple[float, bool]:
    """Normalised distance from the median and whether c lies at or below it. 0/0 is guarded to 0."""
    if c <= median:
        denom = median - c_min
        return ((median - c) / denom if denom != 0 else 0.0), True
    denom = c_max - median
    return ((c - median) / denom if denom != 0 else 0.0), False


def connection_factor(strategy: str, c: float, stats: tuple[float, float, float], gamma: float) -> float:
    c_min, median, c_max = stats
    sigma, below = _sigma(c, c_min, median, c_max)
    if strategy == "additive":
        return 1.0 + gamma * sigma if below else 1.0 - gamma * sigma
    if strategy == "multiplicative":
        return float(math.exp(sigma * math.log(gamma))) if gamma > 0 else (1.0 if sigma == 0 else 0.0)
    raise ValueError(f"connection_factor: strategy {strategy!r} is not connection-based")


def depth_factor(d: int, d_m: int, gamma: float) -> float:
    return float((1.0 + gamma) ** ((d_m - (1 + d)) / d_m)) if d_m > 0 else 1.0


def reference_multipliers(kernel_counts: Sequence[int], strategy: str,
                          gamma: float | None = None) -> tuple[float, float]:
    """(kernel S, 1-D tensor S) of a connection strategy in reference mode, for a model whose kernels (ndim >= 2
    tensors, all named `weight`/`kernel`) have these counts in registration order. The authors' code keyed the
    counts by the short variable name, so every kernel got the LAST kernel's count and every 1-D tensor c = 0,
    while min/median/max were taken over all kernels: the whole model moves at two learning rates."""
    if strategy not in CONNECTION_STRATEGIES:
        raise ValueError(f"strategy {strategy!r} has no kernel multiplier (depth gives every tensor its own); "
                         f"valid: {', '.join(CONNECTION_STRATEGIES)}")
    gamma = DEFAULT_GAMMA[strategy] if gamma is None else float(gamma)
    stats = connection_stats(kernel_counts)
    return (connection_factor(strategy, kernel_counts[-1], stats, gamma),
            connection_factor(strategy, 0.0, stats, gamma))
