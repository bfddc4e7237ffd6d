"""Fusing boxes, keypoints and spans from several workers, weighted by worker quality.

Boxes are ``(x, y, w, h)``. Annotations come per item and label as ``(worker, shapes)``; a worker
who drew nothing still counts in the support denominator. :func:`fuse_boxes` places a fused box at
the weighted median of the members' edges by default: in bench/crowd_bench.py it beats the
weighted mean by 0.5-1.5 points of mean IoU in every setting (same recall), because a biased or
noisy member drags a mean but not a median. Weights come from :func:`worker_box_quality`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Box = tuple[float, float, float, float]
"""(x, y, width, height)."""
Keypoint = tuple[float, float, int]
"""(x, y, visibility): 0 absent, 1 occluded, 2 visible."""
Span = tuple[str, int, int]
"""(label, start, end)."""
Center = Literal["mean", "median"]


@dataclass(frozen=True)
class Cluster:
    """Boxes from different workers that cover the same object (at most one per worker)."""

    members: tuple[tuple[str, Box], ...]

    @property
    def workers(self) -> tuple[str, ...]:
        return tuple(w for w, _ in self.members)


@dataclass(frozen=True)
class FusedBox:
    box: Box
    confidence: float
    """Weighted share of all workers on the item whose box is in the cluster, in [0, 1]."""
    support_workers: tuple[str, ...]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes; 0 when either is empty."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _weight(weights: Mapping[str, float] | None, worker: str) -> float:
    if weights is None:
        return 1.0
    if worker not in weights:
        raise ValueError(f"no weight for worker {worker!r}")
    value = float(weights[worker])
    if value < 0:
        raise ValueError(f"weight of worker {worker!r} is negative")
    return value


def _center(boxes: Sequence[Box], weights: Sequence[float], how: Center = "mean") -> Box:
    coords = np.asarray(boxes, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        w = np.ones(len(boxes))
    if how == "mean":
        out = (coords * w[:, None]).sum(axis=0) / w.sum()
    else:
        # Weighted median of the edges (x0, y0, x1, y1), so width and height stay consistent.
        edges = np.column_stack(
            [coords[:, 0], coords[:, 1], coords[:, 0] + coords[:, 2], coords[:, 1] + coords[:, 3]]
        )
        med = np.array([_weighted_median(edges[:, j], w) for j in range(4)])
        out = np.array([med[0], med[1], med[2] - med[0], med[3] - med[1]])
    return (float(out[0]), float(out[1]), float(out[2]), float(out[3]))


def _weighted_median(values: NDArray[np.float64], weights: NDArray[np.float64]) -> float:
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][int(np.searchsorted(cum, 0.5 * cum[-1]))])


def cluster_boxes(
    annotations: Sequence[tuple[str, Sequence[Box]]],
    *,
    iou_threshold: float = 0.5,
    weights: Mapping[str, float] | None = None,
) -> list[Cluster]:
    """Greedy clustering: each box joins the cluster whose (weighted) mean box it overlaps most.

    A box joins only at IoU ≥ ``iou_threshold`` and only clusters without a box of its worker.
    Workers are taken in input order, or by descending weight when ``weights`` are given (so
    reliable workers seed the clusters); the result is deterministic.
    """
    order = list(range(len(annotations)))
    if weights is not None:
        order.sort(key=lambda i: -_weight(weights, annotations[i][0]))
    members: list[list[tuple[str, Box]]] = []
    centres: list[Box] = []
    for i in order:
        worker, boxes = annotations[i]
        for box in boxes:
            best, best_iou = -1, iou_threshold
            for c, centre in enumerate(centres):
                if any(w == worker for w, _ in members[c]):
                    continue
                overlap = iou(box, centre)
                if overlap >= best_iou:
                    best, best_iou = c, overlap
            if best < 0:
                members.append([(worker, box)])
                centres.append(box)
            else:
                members[best].append((worker, box))
                group = members[best]
                centres[best] = _center(
                    [b for _, b in group], [_weight(weights, w) or 1e-9 for w, _ in group]
                )
    return [Cluster(tuple(m)) for m in members]


def fuse_boxes(
    annotations: Sequence[tuple[str, Sequence[Box]]],
    *,
    weights: Mapping[str, float],
    iou_threshold: float = 0.5,
    min_support: float = 0.5,
    center: Center = "median",
) -> list[FusedBox]:
    """Worker-weighted fusion: keep clusters whose weighted support exceeds ``min_support``.

    Support = sum of member weights / sum of the weights of every worker in ``annotations``; the
    box is the weighted median (or mean) of the members. Every worker needs a weight (ValueError).
    """
    total = sum(_weight(weights, w) for w, _ in annotations)
    if total <= 0:
        return []
    fused: list[FusedBox] = []
    for cluster in cluster_boxes(annotations, iou_threshold=iou_threshold, weights=weights):
        member_weights = [_weight(weights, w) for w in cluster.workers]
        support = sum(member_weights) / total
        if support > min_support:
            box = _center([b for _, b in cluster.members], member_weights, center)
            fused.append(FusedBox(box, min(support, 1.0), cluster.workers))
    return fused


def average_boxes(
    annotations: Sequence[tuple[str, Sequence[Box]]], *, iou_threshold: float = 0.5
) -> list[FusedBox]:
    """Plain consensus: coordinate mean of clusters that more than half of the workers support."""
    weights = {w: 1.0 for w, _ in annotations}
    return fuse_boxes(
        annotations, weights=weights, iou_threshold=iou_threshold, min_support=0.5, center="mean"
    )


def fuse_keypoints(
    annotations: Sequence[tuple[str, Sequence[Keypoint]]], *, weights: Mapping[str, float]
) -> list[Keypoint]:
    """Per point index: visibility by weighted vote (ties: the higher), position = weighted mean of
    the members that saw it (visibility > 0); absent points are (0, 0, 0)."""
    count = max((len(points) for _, points in annotations), default=0)
    fused: list[Keypoint] = []
    for index in range(count):
        tally = [0.0, 0.0, 0.0]
        seen: list[tuple[float, float, float]] = []
        for worker, points in annotations:
            if index >= len(points):
                continue
            x, y, visibility = points[index]
            if visibility not in (0, 1, 2):
                raise ValueError(f"visibility must be 0, 1 or 2, got {visibility}")
            w = _weight(weights, worker)
            tally[visibility] += w
            if visibility > 0:
                seen.append((x, y, w))
        visibility = max(range(3), key=lambda v: (tally[v], v))
        total = sum(w for _, _, w in seen)
        if visibility == 0 or not seen or total <= 0:
            fused.append((0.0, 0.0, 0))
            continue
        fused.append(
            (sum(x * w for x, _, w in seen) / total, sum(y * w for _, y, w in seen) / total, visibility)
        )
    return fused


def vote_spans(
    annotations: Sequence[tuple[str, Sequence[Span]]],
    *,
    weights: Mapping[str, float],
    min_support: float = 0.5,
) -> list[tuple[Span, float]]:
    """Exact (label, start, end) voting: spans whose weighted support exceeds ``min_support``, sorted."""
    total = sum(_weight(weights, w) for w, _ in annotations)
    if total <= 0:
        return []
    support: dict[Span, float] = {}
    for worker, spans in annotations:
        for span in set(spans):
            support[span] = support.get(span, 0.0) + _weight(weights, worker)
    return sorted(
        ((span, s / total) for span, s in support.items() if s / total > min_support),
        key=lambda kept: (kept[0][1], kept[0][2], kept[0][0]),
    )


def _match_quality(boxes: Sequence[Box], reference: Sequence[Box], iou_threshold: float) -> tuple[float, int]:
    """Greedy one-to-one IoU matching (pairs under half the threshold do not match): (IoU sum, boxes due)."""
    pairs = sorted(
        ((iou(b, r), i, j) for i, b in enumerate(boxes) for j, r in enumerate(reference)), reverse=True
    )
    used_b: set[int] = set()
    used_r: set[int] = set()
    total = 0.0
    for overlap, i, j in pairs:
        if overlap < iou_threshold * 0.5 or i in used_b or j in used_r:
            continue
        used_b.add(i)
        used_r.add(j)
        total += overlap
    return total, max(len(boxes), len(reference))


def worker_box_quality(
    items: Mapping[str, Sequence[tuple[str, Sequence[Box]]]],
    *,
    gold: Mapping[str, Sequence[Box]] | None = None,
    iterations: int = 3,
    iou_threshold: float = 0.5,
    min_support: float = 0.5,
    prior: tuple[float, float] = (0.5, 1.0),
) -> dict[str, float]:
    """Per-worker box quality in [0, 1], used as fusion weights.

    Quality = matched IoU summed over the worker's items / the number of boxes that had to match
    (max of the worker's and the reference's count, so misses and extra boxes both count 0), with
    ``prior`` = (mean, pseudo-count) shrinkage for workers with few boxes. The reference is the gold
    boxes where given, else the consensus: fused with equal weights first, then re-fused with the
    latest qualities, ``iterations`` times.
    """
    gold = gold or {}
    workers = sorted({w for annotations in items.values() for w, _ in annotations})
    quality = dict.fromkeys(workers, 1.0)
    prior_mean, prior_count = prior
    for _ in range(max(iterations, 1)):
        matched = dict.fromkeys(workers, prior_mean * prior_count)
        needed = dict.fromkeys(workers, prior_count)
        for item, drawn in items.items():
            if item in gold:
                reference: Sequence[Box] = gold[item]
            else:
                fused = fuse_boxes(
                    drawn, weights=quality, iou_threshold=iou_threshold, min_support=min_support
                )
                reference = [f.box for f in fused]
            for worker, boxes in drawn:
                got, need = _match_quality(boxes, reference, iou_threshold)
                matched[worker] += got
                needed[worker] += need
        quality = {w: matched[w] / needed[w] if needed[w] > 0 else prior_mean for w in workers}
    return quality
