"""Dynamic overlap: after each label, accept the item, ask one more worker, or send it to review."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from annocloud_server.crowd.classes import Posterior


class Step(enum.StrEnum):
    ACCEPT = "accept"
    ASK_MORE = "ask_more"
    REVIEW = "review"


@dataclass(frozen=True)
class OverlapPolicy:
    """Between ``min_labels`` and ``max_labels`` labels per item; accept at ``confidence_threshold``."""

    min_labels: int
    max_labels: int
    confidence_threshold: float

    def __post_init__(self) -> None:
        if self.min_labels < 1:
            raise ValueError("min_labels must be at least 1")
        if self.max_labels < self.min_labels:
            raise ValueError("max_labels must be at least min_labels")
        if not 0.0 < self.confidence_threshold <= 1.0:
            raise ValueError("confidence_threshold must be in (0, 1]")


def next_step(posterior: Posterior, labels_so_far: int, policy: OverlapPolicy) -> Step:
    """ACCEPT at ≥ min_labels and confident; ASK_MORE below max_labels; REVIEW at max_labels."""
    if labels_so_far < 0:
        raise ValueError("labels_so_far must be non-negative")
    if labels_so_far >= policy.min_labels and posterior.confidence >= policy.confidence_threshold:
        return Step.ACCEPT
    if labels_so_far < policy.max_labels:
        return Step.ASK_MORE
    return Step.REVIEW
