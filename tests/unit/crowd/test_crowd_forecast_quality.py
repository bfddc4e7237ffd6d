"""Vendor forecasts (crowd/forecast.py), Beta accuracy and throughput (crowd/quality.py)."""

from __future__ import annotations

import pytest
from annocloud_server.crowd.forecast import VendorCapacity, forecast
from annocloud_server.crowd.quality import beta_accuracy, throughput


def test_forecast_splits_by_throughput() -> None:
    """Work splits 3:1 by throughput, both vendors finish together, cost is exact in micros."""
    result = forecast(
        remaining_tasks=1000,
        vendors=[
            VendorCapacity("fast", tasks_per_hour=50, cost_per_task_micros=20_000, active_workers=3),
            VendorCapacity("slow", tasks_per_hour=50, cost_per_task_micros=10_000),
        ],
    )
    assert [(v.vendor, v.tasks) for v in result.vendors] == [("fast", 750), ("slow", 250)]
    assert [v.hours for v in result.vendors] == [pytest.approx(5.0), pytest.approx(5.0)]
    assert result.hours == pytest.approx(5.0)
    assert result.cost_micros == 750 * 20_000 + 250 * 10_000
    assert result.unassigned == 0


def test_forecast_rounding_and_zero_throughput() -> None:
    """Integer tasks add up to the total, and a vendor without throughput gets none."""
    result = forecast(
        remaining_tasks=10,
        vendors=[
            VendorCapacity("a", 1, 1),
            VendorCapacity("b", 1, 1),
            VendorCapacity("c", 1, 1),
            VendorCapacity("idle", 0, 1),
        ],
    )
    assert [v.tasks for v in result.vendors] == [4, 3, 3, 0]
    assert result.hours == pytest.approx(4.0)


def test_forecast_without_any_throughput() -> None:
    """No throughput anywhere: nothing assigned, hours None (0 when nothing remains)."""
    stuck = forecast(remaining_tasks=5, vendors=[VendorCapacity("idle", 0, 1)])
    assert stuck.hours is None
    assert stuck.unassigned == 5
    assert forecast(remaining_tasks=0, vendors=[]).hours == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        forecast(remaining_tasks=-1, vendors=[])


def test_beta_accuracy_posterior_mean() -> None:
    """With the default (2, 1) prior, no answers give 2/3 and 8 of 10 give 10/13."""
    assert beta_accuracy(0, 0) == pytest.approx(2 / 3)
    assert beta_accuracy(8, 10) == pytest.approx(10 / 13)
    with pytest.raises(ValueError, match="correct"):
        beta_accuracy(3, 2)


def test_throughput_from_handle_times() -> None:
    """Tasks per hour use the mean handle time over the window; the median is reported too."""
    pace = throughput([10.0, 20.0, 30.0, 60.0], window=3)
    assert pace.tasks_per_hour == pytest.approx(3600 * 3 / 110)
    assert pace.median_seconds == 30.0
    assert throughput([]).tasks_per_hour == 0.0
