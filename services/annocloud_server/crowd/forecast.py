"""How long and how much the remaining tasks take when split across vendors working in parallel.

Work is split in proportion to each vendor's throughput (tasks per hour per worker x active
workers), so all vendors finish at about the same time; the wall-clock estimate is the slowest
vendor's hours. Money is integer micros. With remaining work but no throughput anywhere, nothing
is assigned and ``hours`` is None (it cannot finish).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class VendorCapacity:
    vendor: str
    tasks_per_hour: float
    """Per active worker."""
    cost_per_task_micros: int
    active_workers: int = 1

    @property
    def throughput(self) -> float:
        return self.tasks_per_hour * self.active_workers


@dataclass(frozen=True)
class VendorForecast:
    vendor: str
    tasks: int
    hours: float
    cost_micros: int


@dataclass(frozen=True)
class Forecast:
    vendors: tuple[VendorForecast, ...]
    hours: float | None
    """Wall-clock hours (the slowest vendor); None when work remains and no vendor has throughput."""
    cost_micros: int
    unassigned: int


def forecast(*, remaining_tasks: int, vendors: Sequence[VendorCapacity]) -> Forecast:
    """Split ``remaining_tasks`` by throughput (largest remainder, ties in vendor order)."""
    if remaining_tasks < 0:
        raise ValueError("remaining_tasks must be non-negative")
    for v in vendors:
        if v.tasks_per_hour < 0 or v.active_workers < 0 or v.cost_per_task_micros < 0:
            raise ValueError(f"vendor {v.vendor!r}: negative capacity or cost")
    total = sum(v.throughput for v in vendors)
    if total <= 0:
        empty = tuple(VendorForecast(v.vendor, 0, 0.0, 0) for v in vendors)
        return Forecast(empty, None if remaining_tasks else 0.0, 0, remaining_tasks)
    shares = [remaining_tasks * v.throughput / total for v in vendors]
    tasks = [int(s) for s in shares]
    by_remainder = sorted(range(len(vendors)), key=lambda i: (-(shares[i] - tasks[i]), i))
    for i in by_remainder[: remaining_tasks - sum(tasks)]:
        tasks[i] += 1
    rows = tuple(
        VendorForecast(v.vendor, n, n / v.throughput if n else 0.0, n * v.cost_per_task_micros)
        for v, n in zip(vendors, tasks, strict=True)
    )
    return Forecast(rows, max(r.hours for r in rows), sum(r.cost_micros for r in rows), 0)
