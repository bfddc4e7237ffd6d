"""Dynamic overlap decisions of crowd/overlap.py."""

from __future__ import annotations

import pytest
from annocloud_server.crowd.classes import Posterior
from annocloud_server.crowd.overlap import OverlapPolicy, Step, next_step

POLICY = OverlapPolicy(min_labels=2, max_labels=5, confidence_threshold=0.9)


def posterior(confidence: float) -> Posterior:
    return Posterior("a", confidence, {"a": confidence, "b": 1 - confidence})


def test_next_step_transitions() -> None:
    """Below min: ask more even if confident; confident at min: accept; unconfident at max: review."""
    assert next_step(posterior(0.99), 1, POLICY) is Step.ASK_MORE
    assert next_step(posterior(0.95), 2, POLICY) is Step.ACCEPT
    assert next_step(posterior(0.9), 3, POLICY) is Step.ACCEPT
    assert next_step(posterior(0.6), 4, POLICY) is Step.ASK_MORE
    assert next_step(posterior(0.6), 5, POLICY) is Step.REVIEW
    assert next_step(posterior(0.95), 5, POLICY) is Step.ACCEPT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 3, 0.9), "min_labels"),
        ((3, 2, 0.9), "max_labels"),
        ((1, 3, 0.0), "threshold"),
        ((1, 3, 1.5), "threshold"),
    ],
)
def test_policy_validation(args: tuple[int, int, float], message: str) -> None:
    """Impossible policies are refused with a message naming the field."""
    with pytest.raises(ValueError, match=message):
        OverlapPolicy(*args)
