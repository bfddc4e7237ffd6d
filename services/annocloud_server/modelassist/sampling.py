"""Uncertainty scores, committee disagreement, cold-start selection and queue ranking.

Every score is "higher = the model learns more from a label here". ``rank`` turns scores into the
order in which unlabelled items go to annotators; ties keep item order, so a ranking is
deterministic. Cold start (no head yet) is random or k-center greedy on the embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray


class Strategy(StrEnum):
    """How a project orders its unlabelled items once a head exists."""

    RANDOM = "random"
    LEAST_CONFIDENCE = "least_confidence"
    MARGIN = "margin"
    ENTROPY = "entropy"
    COMMITTEE = "committee"


class ColdStart(StrEnum):
    """How a project picks its first items, before any label exists."""

    RANDOM = "random"
    K_CENTER = "k_center"


class SamplingError(ValueError):
    """Inputs a score or a ranking cannot be computed from."""


def least_confidence(probabilities: ArrayLike) -> NDArray[np.float64]:
    """``1 - max p``: 0 for a one-hot row, ``1 - 1/k`` for a uniform one."""
    p = _rows(probabilities)
    return np.asarray(1.0 - p.max(axis=1), dtype=np.float64)


def margin(probabilities: ArrayLike) -> NDArray[np.float64]:
    """``1 - (p_first - p_second)``: 0 for a one-hot row, 1 when the top two classes tie."""
    p = _rows(probabilities)
    if p.shape[1] < 2:
        raise SamplingError("margin needs at least two classes")
    top_two = np.sort(p, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def entropy(probabilities: ArrayLike) -> NDArray[np.float64]:
    """Shannon entropy in nats: 0 for a one-hot row, ``log k`` for a uniform one."""
    return _entropy(_rows(probabilities))


def vote_entropy(committee_probabilities: ArrayLike) -> NDArray[np.float64]:
    """Entropy of the committee's hard votes per item, from ``(members, items, classes)``.

    0 when every member predicts the same class; at most ``log(min(members, classes))``.
    """
    stacked = np.asarray(committee_probabilities, dtype=np.float64)
    if stacked.ndim != 3 or stacked.shape[0] == 0:
        raise SamplingError(f"committee probabilities must be (members, items, classes), got {stacked.shape}")
    members, items, classes = stacked.shape
    votes = stacked.argmax(axis=2)
    counts = np.zeros((items, classes))
    np.add.at(counts, (np.broadcast_to(np.arange(items), votes.shape), votes), 1.0)
    return _entropy(counts / members)


def rank(
    strategy: Strategy,
    *,
    probabilities: ArrayLike | None = None,
    committee_probabilities: ArrayLike | None = None,
    n_items: int | None = None,
    seed: int = 0,
) -> NDArray[np.intp]:
    """Item indices, most informative first.

    ``RANDOM`` needs only ``n_items`` (or any of the arrays) and ``seed``; ``COMMITTEE`` needs
    ``committee_probabilities``; the other strategies need ``probabilities``.
    """
    if strategy is Strategy.RANDOM:
        count = _count(n_items, probabilities, committee_probabilities)
        return np.random.default_rng(seed).permutation(count).astype(np.intp)
    if strategy is Strategy.COMMITTEE:
        if committee_probabilities is None:
            raise SamplingError("committee ranking needs committee_probabilities")
        scores = vote_entropy(committee_probabilities)
        # Vote entropy is coarse (few distinct values); the committee's mean entropy breaks ties.
        tie_break = entropy(np.asarray(committee_probabilities, dtype=np.float64).mean(axis=0))
        return np.asarray(np.lexsort((-tie_break, -scores)), dtype=np.intp)
    if probabilities is None:
        raise SamplingError(f"{strategy.value} ranking needs probabilities")
    return order_by_score(SCORES[strategy](probabilities))


def order_by_score(scores: ArrayLike) -> NDArray[np.intp]:
    """Indices by descending score; equal scores keep ascending index order."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    return np.argsort(-values, kind="stable").astype(np.intp)


def k_center_greedy(
    features: ArrayLike, count: int, *, selected: Sequence[int] = (), seed: int = 0
) -> NDArray[np.intp]:
    """``count`` new item indices, each the one farthest (Euclidean) from everything chosen so far.

    ``selected`` are items already labelled; with none, the first pick is a seeded random item.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise SamplingError(f"features must be a (items, dims) matrix, got shape {x.shape}")
    n = x.shape[0]
    count = min(count, n - len(set(selected)))
    picks: list[int] = []
    if count <= 0:
        return np.asarray(picks, dtype=np.intp)
    nearest = np.full(n, np.inf)
    centres = list(selected)
    if not centres:
        first = int(np.random.default_rng(seed).integers(n))
        picks.append(first)
        centres = [first]
    for centre in centres:
        nearest = np.minimum(nearest, _sq_distances(x, x[centre]))
    while len(picks) < count:
        farthest = int(np.argmax(nearest))
        picks.append(farthest)
        nearest = np.minimum(nearest, _sq_distances(x, x[farthest]))
    return np.asarray(picks, dtype=np.intp)


def cold_start(strategy: ColdStart, features: ArrayLike, count: int, *, seed: int = 0) -> NDArray[np.intp]:
    """The first ``count`` items to label when no head exists yet."""
    if strategy is ColdStart.K_CENTER:
        return k_center_greedy(features, count, seed=seed)
    n = np.asarray(features).shape[0]
    return np.random.default_rng(seed).permutation(n)[: min(count, n)].astype(np.intp)


SCORES = {
    Strategy.LEAST_CONFIDENCE: least_confidence,
    Strategy.MARGIN: margin,
    Strategy.ENTROPY: entropy,
}


def _rows(probabilities: ArrayLike) -> NDArray[np.float64]:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise SamplingError(f"probabilities must be an (items, classes) matrix, got shape {p.shape}")
    return p


def _entropy(p: NDArray[np.float64]) -> NDArray[np.float64]:
    safe = np.where(p > 0, p, 1.0)
    return np.asarray(-(p * np.log(safe)).sum(axis=1), dtype=np.float64)


def _sq_distances(x: NDArray[np.float64], point: NDArray[np.float64]) -> NDArray[np.float64]:
    diff = x - point
    return np.asarray(np.einsum("ij,ij->i", diff, diff), dtype=np.float64)


def _count(*arrays: ArrayLike | None) -> int:
    for value in arrays:
        if isinstance(value, int):
            return value
        if value is not None:
            shape = np.asarray(value).shape
            return int(shape[1] if len(shape) == 3 else shape[0])
    raise SamplingError("random ranking needs n_items or an array to count items from")
