"""What the modelassist service decides, pure: detections → pre-labels, how much of a suggestion
survived the human edit, and the rescoring of a project's unlabeled items.

Plain values in and out (boxes as ``(x, y, w, h)`` tuples, class names, numpy arrays); the service
maps protos and rows onto them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from annocloud_server.crowd.geometry import iou
from annocloud_server.modelassist import heads, sampling

Box = tuple[float, float, float, float]
UNCHANGED_IOU = 0.95
KEPT_IOU = 0.5
MIN_PRIORITY = 1
MAX_PRIORITY = 99
"""Label tasks get 1..99 by rank; rework tasks stay above at 100."""

STRATEGIES = {
    "SAMPLING_STRATEGY_RANDOM": sampling.Strategy.RANDOM,
    "SAMPLING_STRATEGY_LEAST_CONFIDENCE": sampling.Strategy.LEAST_CONFIDENCE,
    "SAMPLING_STRATEGY_MARGIN": sampling.Strategy.MARGIN,
    "SAMPLING_STRATEGY_ENTROPY": sampling.Strategy.ENTROPY,
    "SAMPLING_STRATEGY_COMMITTEE": sampling.Strategy.COMMITTEE,
}


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float


@dataclass(frozen=True)
class PreLabel:
    """The suggestion of one model for one item: BOX regions of one label."""

    label: str
    boxes: tuple[Box, ...]
    score: float
    """Mean box score; 1.0 when nothing was found (the model is sure there is nothing)."""


def prelabel(detections: Sequence[Detection], *, label: str, min_score: float) -> PreLabel:
    kept = [d for d in detections if d.score >= min_score]
    score = float(np.mean([d.score for d in kept])) if kept else 1.0
    return PreLabel(label=label, boxes=tuple(d.box for d in kept), score=score)


@dataclass
class Survival:
    """How one submitted annotation treated one suggestion."""

    suggested: int = 0
    unchanged: int = 0
    adjusted: int = 0
    deleted: int = 0
    added: int = 0
    kept_ious: list[float] = field(default_factory=list)
    classes_changed: bool = False


def match_boxes(
    proposed: Sequence[Box], actual: Sequence[Box], *, min_iou: float = KEPT_IOU
) -> list[tuple[int, int, float]]:
    """One-to-one (proposed index, actual index, IoU) pairs, best IoU first, greedy, each at least
    ``min_iou``: which suggestion a person kept as which box."""
    pairs = sorted(
        ((iou(a, b), i, j) for i, a in enumerate(proposed) for j, b in enumerate(actual)), reverse=True
    )
    used_i: set[int] = set()
    used_j: set[int] = set()
    matches = []
    for overlap, i, j in pairs:
        if overlap < min_iou:
            break
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        matches.append((i, j, overlap))
    return matches


def survival(
    suggested: Mapping[str, Sequence[Box]],
    submitted: Mapping[str, Sequence[Box]],
    *,
    suggested_classes: Sequence[str] = (),
    submitted_classes: Sequence[str] = (),
) -> Survival:
    """Matches suggested and submitted boxes per label greedily by IoU (best pairs first)."""
    result = Survival(classes_changed=sorted(suggested_classes) != sorted(submitted_classes))
    for label in sorted(set(suggested) | set(submitted)):
        mine, theirs = list(suggested.get(label, ())), list(submitted.get(label, ()))
        result.suggested += len(mine)
        matches = match_boxes(mine, theirs)
        for _, _, overlap in matches:
            result.kept_ious.append(overlap)
            if overlap >= UNCHANGED_IOU:
                result.unchanged += 1
            else:
                result.adjusted += 1
        result.deleted += len(mine) - len(matches)
        result.added += len(theirs) - len(matches)
    return result


@dataclass(frozen=True)
class Scored:
    item: str
    uncertainty: float
    priority: int


def priorities(order: Sequence[int], count: int) -> list[int]:
    """Queue priority by rank: the most informative item gets 99, the least 1 (linear in rank)."""
    out = [MIN_PRIORITY] * count
    if count == 0:
        return out
    span = MAX_PRIORITY - MIN_PRIORITY
    for rank, index in enumerate(order):
        out[index] = MAX_PRIORITY - (span * rank) // max(count - 1, 1)
    return out


def rescore(
    *,
    items: Sequence[str],
    embeddings: NDArray[np.float64],
    strategy: str,
    head: heads.SoftmaxHead | None,
    committee: Sequence[heads.SoftmaxHead] = (),
    seed: int = 0,
) -> list[Scored]:
    """Scores unlabeled items under the project's head with its strategy (higher = label first)."""
    if not items:
        return []
    chosen = STRATEGIES.get(strategy, sampling.Strategy.MARGIN)
    if chosen == sampling.Strategy.COMMITTEE and committee:
        stacked = heads.committee_probabilities(committee, embeddings)
        scores = sampling.vote_entropy(stacked)
        order = sampling.rank(chosen, committee_probabilities=stacked)
    elif chosen == sampling.Strategy.RANDOM or head is None:
        order = sampling.rank(sampling.Strategy.RANDOM, n_items=len(items), seed=seed)
        scores = np.asarray(np.linspace(1.0, 0.0, len(items))[np.argsort(order)], dtype=np.float64)
    else:
        probabilities = head.predict_proba(embeddings)
        scores = sampling.SCORES[chosen](probabilities)
        if chosen == sampling.Strategy.ENTROPY and probabilities.shape[1] > 1:
            scores = np.asarray(scores / np.log(probabilities.shape[1]), dtype=np.float64)
        order = sampling.rank(chosen, probabilities=probabilities)
    prio = priorities([int(i) for i in order], len(items))
    return [
        Scored(item=item, uncertainty=float(np.clip(scores[i], 0.0, 1.0)), priority=prio[i])
        for i, item in enumerate(items)
    ]


def cold_start_order(
    *, items: Sequence[str], embeddings: NDArray[np.float64], diversity: bool, seed: int = 0
) -> list[Scored]:
    """Before any head: random order, or k-center greedy over the embeddings (diverse first)."""
    if not items:
        return []
    if diversity:
        order = [
            int(i)
            for i in sampling.cold_start(sampling.ColdStart.K_CENTER, embeddings, len(items), seed=seed)
        ]
        missing = [i for i in range(len(items)) if i not in set(order)]
        order += missing
    else:
        order = [int(i) for i in sampling.rank(sampling.Strategy.RANDOM, n_items=len(items), seed=seed)]
    prio = priorities(order, len(items))
    rank_of = {index: rank for rank, index in enumerate(order)}
    return [
        Scored(item=item, uncertainty=1.0 - rank_of[i] / max(len(items) - 1, 1), priority=prio[i])
        for i, item in enumerate(items)
    ]


def train(
    *, embeddings: NDArray[np.float64], labels: Sequence[str], classes: Sequence[str], committee_size: int = 0
) -> tuple[heads.SoftmaxHead | None, list[heads.SoftmaxHead]]:
    """A head over ``classes`` when the labels cover at least two of them, else None."""
    index = {name: i for i, name in enumerate(classes)}
    rows = [(i, index[label]) for i, label in enumerate(labels) if label in index]
    if len({c for _, c in rows}) < 2 or len(classes) < 2:
        return None, []
    x = embeddings[[i for i, _ in rows]]
    y = np.array([c for _, c in rows], dtype=np.intp)
    head = heads.fit_head(x, y, len(classes))
    committee = heads.fit_committee(x, y, len(classes), size=committee_size) if committee_size else []
    return head, committee
