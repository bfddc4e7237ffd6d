"""Consensus over the independent labels of one item, and the accept-or-review decision.

Pure functions over ``Labels`` messages. Each component (classes, boxes, polygons, keypoints, spans)
yields its aggregated labels and an agreement in [0, 1]; the item's agreement is their minimum.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2

from annocloud_server.common.labels import BoxTuple, box_tuple, iou, mean_box, region_bbox

CLUSTER_IOU = 0.5


@dataclass(frozen=True)
class Aggregate:
    """The proposal for an item, how much the votes agree, and whether the class vote is tied."""

    labels: pb.Labels
    agreement: float
    tie: bool
    components: dict[str, float] = field(default_factory=dict)


def infer_mode(votes: Sequence[pb.Labels]) -> int:
    """Classification mode when the schema is unknown: SINGLE unless a vote has several classes."""
    if not any(v.classes or v.not_sure for v in votes):
        return tasks_pb2.CLASSIFICATION_MODE_UNSPECIFIED
    if any(len(v.classes) > 1 for v in votes):
        return tasks_pb2.CLASSIFICATION_MODE_MULTI
    return tasks_pb2.CLASSIFICATION_MODE_SINGLE


def _consistency(supports: Sequence[int], n: int) -> float:
    """Mean over choices of the share of votes on the winning side (in or out); 1.0 for no choices."""
    if not supports:
        return 1.0
    return sum(max(k, n - k) / n for k in supports) / len(supports)


@dataclass(frozen=True)
class ClassResult:
    classes: list[str]
    not_sure: bool
    agreement: float
    tie: bool


def aggregate_classes(votes: Sequence[pb.Labels], mode: int) -> ClassResult:
    """SINGLE: majority over answers that are not "not sure"; MULTI: classes more than half chose."""
    n = len(votes)
    if mode == tasks_pb2.CLASSIFICATION_MODE_UNSPECIFIED or n == 0:
        return ClassResult([], False, 1.0, False)
    if all(v.not_sure for v in votes):
        return ClassResult([], True, 0.0, True)
    if mode == tasks_pb2.CLASSIFICATION_MODE_SINGLE:
        counts = Counter(v.classes[0] for v in votes if not v.not_sure and v.classes)
        if not counts:
            return ClassResult([], False, 0.0, True)
        top = max(counts.values())
        leaders = sorted(name for name, count in counts.items() if count == top)
        agreement = top / n
        if len(leaders) > 1:
            return ClassResult([], False, agreement, True)
        return ClassResult([leaders[0]], False, agreement, False)
    counts = Counter(name for v in votes for name in set(v.classes))
    chosen = sorted(name for name, count in counts.items() if count > n / 2)
    return ClassResult(chosen, False, _consistency(list(counts.values()), n), False)


def majority_attributes(regions: Sequence[pb.Region]) -> dict[str, str]:
    """Per attribute, the value most members gave (ties: the smallest value)."""
    keys = sorted({k for r in regions for k in r.attributes})
    result: dict[str, str] = {}
    for key in keys:
        counts = Counter(r.attributes[key] for r in regions if key in r.attributes)
        top = max(counts.values())
        result[key] = min(value for value, count in counts.items() if count == top)
    return result


@dataclass
class Cluster:
    """Regions of one label from different annotators that cover the same object."""

    voters: list[int] = field(default_factory=list)
    regions: list[pb.Region] = field(default_factory=list)

    def boxes(self) -> list[BoxTuple]:
        return [region_bbox(r) for r in self.regions]


def cluster_regions(
    entries: Sequence[tuple[int, pb.Region]], threshold: float = CLUSTER_IOU
) -> list[Cluster]:
    """Greedy clustering by IoU of bounding boxes to the cluster's mean box; one region per voter."""
    clusters: list[Cluster] = []
    for voter, region in entries:
        box = region_bbox(region)
        best: Cluster | None = None
        best_iou = threshold
        for cluster in clusters:
            if voter in cluster.voters:
                continue
            overlap = iou(box, mean_box(cluster.boxes()))
            if overlap >= best_iou:
                best, best_iou = cluster, overlap
        if best is None:
            best = Cluster()
            clusters.append(best)
        best.voters.append(voter)
        best.regions.append(region)
    return clusters


def _merge_box(label: str, cluster: Cluster) -> tuple[pb.Region, list[float]]:
    merged = mean_box([box_tuple(r.box) for r in cluster.regions])
    region = pb.Region(
        label=label,
        box=pb.Box(x=merged[0], y=merged[1], width=merged[2], height=merged[3]),
        attributes=majority_attributes(cluster.regions),
    )
    return region, [iou(box_tuple(r.box), merged) for r in cluster.regions]


def _merge_polygon(label: str, cluster: Cluster) -> tuple[pb.Region, list[float]]:
    boxes = cluster.boxes()

    def mean_to_others(i: int) -> float:
        others = [iou(boxes[i], b) for j, b in enumerate(boxes) if j != i]
        return sum(others) / len(others) if others else 1.0

    best = max(range(len(boxes)), key=mean_to_others)
    region = pb.Region(label=label, attributes=majority_attributes(cluster.regions))
    region.polygon.CopyFrom(cluster.regions[best].polygon)
    return region, [iou(b, boxes[best]) for b in boxes]


def _merge_keypoints(label: str, cluster: Cluster) -> tuple[pb.Region, list[float]]:
    count = max(len(r.keypoints.points) for r in cluster.regions)
    points: list[pb.Keypoint] = []
    for index in range(count):
        members = [r.keypoints.points[index] for r in cluster.regions if index < len(r.keypoints.points)]
        votes = Counter(p.visibility for p in members)
        top = max(votes.values())
        visibility = max(v for v, c in votes.items() if c == top)
        seen = [p for p in members if p.visibility > 0]
        if visibility == 0 or not seen:
            points.append(pb.Keypoint(x=0.0, y=0.0, visibility=0))
            continue
        x = sum(p.x for p in seen) / len(seen)
        y = sum(p.y for p in seen) / len(seen)
        points.append(pb.Keypoint(x=x, y=y, visibility=visibility))
    region = pb.Region(
        label=label, keypoints=pb.Keypoints(points=points), attributes=majority_attributes(cluster.regions)
    )
    merged = region_bbox(region)
    return region, [iou(b, merged) for b in cluster.boxes()]


_MERGERS: dict[str, Callable[[str, Cluster], tuple[pb.Region, list[float]]]] = {
    "box": _merge_box,
    "polygon": _merge_polygon,
    "keypoints": _merge_keypoints,
}


def aggregate_geometry(votes: Sequence[pb.Labels], kind: str) -> tuple[list[pb.Region], float]:
    """Merged regions of one geometry kind and their agreement (mean member IoU to the merged shape)."""
    n = len(votes)
    by_label: dict[str, list[tuple[int, pb.Region]]] = {}
    for voter, labels in enumerate(votes):
        for region in labels.regions:
            if region.WhichOneof("geometry") == kind:
                by_label.setdefault(region.label, []).append((voter, region))
    if not by_label:
        return [], 1.0
    merged: list[pb.Region] = []
    overlaps: list[float] = []
    for label, entries in by_label.items():
        for cluster in cluster_regions(entries):
            if len(cluster.voters) > n / 2:
                region, member_ious = _MERGERS[kind](label, cluster)
                merged.append(region)
                overlaps.extend(member_ious)
    agreement = sum(overlaps) / len(overlaps) if overlaps else 0.0
    return merged, agreement


def aggregate_spans(votes: Sequence[pb.Labels]) -> tuple[list[pb.Region], float]:
    """Exact-span voting: a (label, start, end) is kept when more than half the votes have it."""
    n = len(votes)
    support: dict[tuple[str, int, int], list[pb.Region]] = {}
    for labels in votes:
        seen: set[tuple[str, int, int]] = set()
        for region in labels.regions:
            if region.WhichOneof("geometry") != "span":
                continue
            key = (region.label, region.span.start, region.span.end)
            if key not in seen:
                seen.add(key)
                support.setdefault(key, []).append(region)
    kept = [
        pb.Region(
            label=label, span=pb.TextSpan(start=start, end=end), attributes=majority_attributes(members)
        )
        for (label, start, end), members in sorted(
            support.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])
        )
        if len(members) > n / 2
    ]
    return kept, _consistency([len(m) for m in support.values()], n)


def aggregate(votes: Sequence[pb.Labels], *, mode: int) -> Aggregate:
    """The proposal for an item from its active votes."""
    classes = aggregate_classes(votes, mode)
    labels = pb.Labels(classes=classes.classes, not_sure=classes.not_sure)
    components = {"classes": classes.agreement}
    for kind, name in (("box", "boxes"), ("polygon", "polygons"), ("keypoints", "keypoints")):
        regions, agreement = aggregate_geometry(votes, kind)
        labels.regions.extend(regions)
        components[name] = agreement
    spans, span_agreement = aggregate_spans(votes)
    labels.regions.extend(spans)
    components["spans"] = span_agreement
    return Aggregate(
        labels=labels, agreement=min(components.values()), tie=classes.tie, components=components
    )


def decide(result: Aggregate, *, policy: int, min_agreement: float) -> int:
    """REVIEW_REASON_UNSPECIFIED to accept automatically, else why the item goes to review."""
    if result.tie:
        return int(qa_pb2.REVIEW_REASON_TIE)
    if result.agreement < min_agreement:
        return int(qa_pb2.REVIEW_REASON_LOW_AGREEMENT)
    if policy == tasks_pb2.REVIEW_POLICY_ALL:
        return int(qa_pb2.REVIEW_REASON_POLICY)
    return int(qa_pb2.REVIEW_REASON_UNSPECIFIED)
