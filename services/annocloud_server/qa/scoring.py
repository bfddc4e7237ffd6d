"""Posterior confidence, reliability-weighted fusion, worker reliability and matching answers to truth.

Pure functions over ``Labels`` messages and plain numbers (``crowd`` does the statistics). The
agreement figures stay those of :mod:`domain`; confidence is a separate number:

- SINGLE classification: WEIGHTED (and UNSPECIFIED) projects use the one-coin posterior of the
  proposed class given each annotator's reliability (a tie: the top posterior); MAJORITY projects
  the share of the votes on the winner. MULTI: the class agreement. No classes: 1.0.
- Geometry: the (weighted) support of each kept region, the minimum over regions; 1.0 when nothing
  was drawn, and the share of voters who drew nothing when regions were drawn but none was kept.
- The item's confidence is the minimum of the two.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.tasks.v1 import tasks_pb2

from annocloud_server.common.labels import box_tuple, iou, region_bbox
from annocloud_server.crowd.classes import item_posterior
from annocloud_server.crowd.geometry import fuse_boxes
from annocloud_server.crowd.quality import beta_accuracy
from annocloud_server.qa import domain

DEFAULT_RELIABILITY = 0.7
"""Reliability of a worker without evidence (no gold answered, no vote on an accepted item)."""
MATCH_IOU = 0.5
_GEOMETRY = ("box", "polygon", "keypoints")


def reliability(*, gold_correct: int, gold_answered: int, agreed: int, accepted_votes: int) -> float:
    """Beta(2, 1) posterior accuracy over gold answers and votes on accepted items (0.7 without any)."""
    total = gold_answered + accepted_votes
    if total <= 0:
        return DEFAULT_RELIABILITY
    return beta_accuracy(min(gold_correct + agreed, total), total)


def is_weighted(method: int) -> bool:
    return method != tasks_pb2.AGGREGATION_METHOD_MAJORITY


@dataclass(frozen=True)
class Scored:
    """The domain aggregate (its labels possibly re-fused by weight) and its posterior confidence."""

    result: domain.Aggregate
    confidence: float


def _class_confidence(
    votes: Sequence[tuple[str, pb.Labels]],
    result: domain.Aggregate,
    *,
    mode: int,
    classes: Sequence[str],
    weights: Mapping[str, float],
    weighted: bool,
) -> float:
    if mode == tasks_pb2.CLASSIFICATION_MODE_UNSPECIFIED or not votes:
        return 1.0
    if mode != tasks_pb2.CLASSIFICATION_MODE_SINGLE:
        return result.components.get("classes", 1.0)
    answers = [
        (worker, labels.classes[0]) for worker, labels in votes if labels.classes and not labels.not_sure
    ]
    if not answers:
        return 0.0
    proposed = result.labels.classes[0] if result.labels.classes else None
    if not weighted:
        counts = Counter(label for _, label in answers)
        return (counts[proposed] if proposed else max(counts.values())) / len(votes)
    names = sorted(set(classes) | {label for _, label in answers})
    posterior = item_posterior(answers, worker_accuracy=weights, classes=names)
    return posterior.distribution.get(proposed, 0.0) if proposed else posterior.confidence


def _support_confidence(supports: Sequence[float], kept: Sequence[float]) -> float:
    if kept:
        return min(kept)
    if supports:
        return 1.0 - max(supports)
    return 1.0


def _geometry_confidence(votes: Sequence[pb.Labels], kind: str, weights: Sequence[float]) -> float:
    """Weighted support of the clusters domain keeps (more than half of the voters)."""
    total = sum(weights) or 1.0
    by_label: dict[str, list[tuple[int, pb.Region]]] = {}
    for voter, labels in enumerate(votes):
        for region in labels.regions:
            if region.WhichOneof("geometry") == kind:
                by_label.setdefault(region.label, []).append((voter, region))
    supports: list[float] = []
    kept: list[float] = []
    for entries in by_label.values():
        for cluster in domain.cluster_regions(entries):
            support = sum(weights[v] for v in cluster.voters) / total
            supports.append(support)
            if len(cluster.voters) > len(votes) / 2:
                kept.append(min(support, 1.0))
    return _support_confidence(supports, kept)


def _closest(regions: Sequence[pb.Region], box: tuple[float, float, float, float]) -> pb.Region:
    return max(regions, key=lambda r: iou(box_tuple(r.box), box))


def fuse_weighted_boxes(
    votes: Sequence[pb.Labels], weights: Sequence[float]
) -> tuple[list[pb.Region], float]:
    """Boxes per label fused by ``crowd.geometry.fuse_boxes`` with the voters' weights, and their confidence.

    Attributes of a fused box: the majority over the supporting voters' boxes closest to it.
    """
    by_voter = {str(i): w for i, w in enumerate(weights)}
    labels = sorted({r.label for v in votes for r in v.regions if r.WhichOneof("geometry") == "box"})
    regions: list[pb.Region] = []
    supports: list[float] = []
    kept: list[float] = []
    for label in labels:
        drawn = [
            [r for r in v.regions if r.WhichOneof("geometry") == "box" and r.label == label] for v in votes
        ]
        annotations = [(str(i), [box_tuple(r.box) for r in rs]) for i, rs in enumerate(drawn)]
        fused = fuse_boxes(annotations, weights=by_voter, iou_threshold=MATCH_IOU, min_support=0.5)
        if not fused:
            total = sum(weights) or 1.0
            supports.append(max((by_voter[w] for w, boxes in annotations if boxes), default=0.0) / total)
        for f in fused:
            centre = f.box
            members = [_closest(drawn[int(w)], centre) for w in f.support_workers]
            x, y, width, height = f.box
            regions.append(
                pb.Region(
                    label=label,
                    box=pb.Box(x=x, y=y, width=width, height=height),
                    attributes=domain.majority_attributes(members),
                )
            )
            kept.append(f.confidence)
    return regions, _support_confidence(supports, kept)


def score(
    votes: Sequence[tuple[str, pb.Labels]],
    *,
    mode: int,
    classes: Sequence[str],
    reliabilities: Mapping[str, float],
    method: int,
) -> Scored:
    """Aggregates ``(annotator, labels)`` votes as domain does, re-fuses boxes by weight for WEIGHTED
    projects, and attaches the posterior confidence."""
    labels = [v for _, v in votes]
    result = domain.aggregate(labels, mode=mode)
    weighted = is_weighted(method)
    weights = [reliabilities.get(worker, DEFAULT_RELIABILITY) if weighted else 1.0 for worker, _ in votes]
    confidences = [
        _class_confidence(
            votes, result, mode=mode, classes=classes, weights=dict(reliabilities), weighted=weighted
        )
    ]
    if weighted:
        boxes, box_confidence = fuse_weighted_boxes(labels, weights)
        proposal = pb.Labels(classes=result.labels.classes, not_sure=result.labels.not_sure)
        proposal.regions.extend(boxes)
        proposal.regions.extend(r for r in result.labels.regions if r.WhichOneof("geometry") != "box")
        result = domain.Aggregate(
            labels=proposal, agreement=result.agreement, tie=result.tie, components=result.components
        )
        confidences.append(box_confidence)
    else:
        confidences.append(_geometry_confidence(labels, "box", weights))
    for kind in ("polygon", "keypoints"):
        confidences.append(_geometry_confidence(labels, kind, weights))
    return Scored(result=result, confidence=min(confidences))


def disagrees(result: domain.Aggregate, *, min_agreement: float) -> bool:
    """Early disagreement: the classes differ, or the geometry agrees less than the project minimum."""
    if result.components.get("classes", 1.0) < 1.0:
        return True
    geometry = [result.components.get(name, 1.0) for name in ("boxes", "polygons", "keypoints")]
    return min(geometry) < min_agreement


def _regions_match(answer: Sequence[pb.Region], truth: Sequence[pb.Region]) -> bool:
    """One-to-one: every true region matched by an answered one of its label at IoU ≥ 0.5, none extra."""
    if len(answer) != len(truth):
        return False
    pairs = sorted(
        (
            (iou(region_bbox(a), region_bbox(t)), i, j)
            for i, a in enumerate(answer)
            for j, t in enumerate(truth)
            if a.label == t.label
        ),
        reverse=True,
    )
    used_a: set[int] = set()
    used_t: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < MATCH_IOU or i in used_a or j in used_t:
            continue
        used_a.add(i)
        used_t.add(j)
    return len(used_t) == len(truth)


def labels_match(answer: pb.Labels, truth: pb.Labels) -> bool:
    """Whether an answer is right: same class set, geometry matched one-to-one, spans exactly equal."""
    if set(answer.classes) != set(truth.classes):
        return False
    for kind in _GEOMETRY:
        mine = [r for r in answer.regions if r.WhichOneof("geometry") == kind]
        true = [r for r in truth.regions if r.WhichOneof("geometry") == kind]
        if not _regions_match(mine, true):
            return False

    def spans(labels: pb.Labels) -> set[tuple[str, int, int]]:
        return {
            (r.label, r.span.start, r.span.end) for r in labels.regions if r.WhichOneof("geometry") == "span"
        }

    return spans(answer) == spans(truth)
