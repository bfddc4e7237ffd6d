"""Worker accuracy from gold answers and throughput from handle times."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def beta_accuracy(correct: int, total: int, *, prior: tuple[float, float] = (2.0, 1.0)) -> float:
    """Posterior mean accuracy under a Beta(right, wrong) prior: (correct + a) / (total + a + b)."""
    a, b = prior
    if not 0 <= correct <= total:
        raise ValueError("need 0 <= correct <= total")
    if a <= 0 or b <= 0:
        raise ValueError("prior pseudo-counts must be positive")
    return (correct + a) / (total + a + b)


@dataclass(frozen=True)
class Throughput:
    tasks_per_hour: float
    median_seconds: float
    tasks: int


def throughput(handle_times_seconds: Sequence[float], *, window: int | None = None) -> Throughput:
    """One worker's pace from their last ``window`` handle times (all when None); 0/h when empty."""
    times = list(handle_times_seconds)[-window:] if window else list(handle_times_seconds)
    if any(t < 0 for t in times):
        raise ValueError("handle times must be non-negative")
    if not times or sum(times) <= 0:
        return Throughput(0.0, 0.0, len(times))
    return Throughput(3600.0 * len(times) / sum(times), float(statistics.median(times)), len(times))
