"""Gold scoring, reliability, posterior confidence and weighted box fusion (qa/scoring.py)."""

from __future__ import annotations

import pytest
from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.qa import scoring

SINGLE = tasks_pb2.CLASSIFICATION_MODE_SINGLE
WEIGHTED = tasks_pb2.AGGREGATION_METHOD_WEIGHTED
MAJORITY = tasks_pb2.AGGREGATION_METHOD_MAJORITY


def box(x: float, y: float, label: str = "car", w: float = 100, h: float = 100) -> pb.Region:
    return pb.Region(label=label, box=pb.Box(x=x, y=y, width=w, height=h))


def span(label: str, start: int, end: int) -> pb.Region:
    return pb.Region(label=label, span=pb.TextSpan(start=start, end=end))


def test_gold_classes_must_be_the_same_set() -> None:
    """Classification gold: the same class set is right, a subset or "not sure" is wrong."""
    truth = pb.Labels(classes=["cat", "pet"])
    assert scoring.labels_match(pb.Labels(classes=["pet", "cat"]), truth)
    assert not scoring.labels_match(pb.Labels(classes=["cat"]), truth)
    assert not scoring.labels_match(pb.Labels(not_sure=True), truth)


def test_gold_boxes_match_one_to_one_with_no_extras() -> None:
    """Every gold box needs its own same-label box at IoU ≥ 0.5; a miss, an extra or a wrong label fails."""
    truth = pb.Labels(regions=[box(0, 0), box(300, 0)])
    assert scoring.labels_match(pb.Labels(regions=[box(305, 5), box(10, 0)]), truth)
    assert not scoring.labels_match(pb.Labels(regions=[box(0, 0)]), truth)
    assert not scoring.labels_match(pb.Labels(regions=[box(0, 0), box(300, 0), box(600, 0)]), truth)
    assert not scoring.labels_match(pb.Labels(regions=[box(0, 0), box(300, 0, label="bus")]), truth)
    assert not scoring.labels_match(pb.Labels(regions=[box(0, 0), box(360, 0)]), truth)  # IoU 0.25
    assert not scoring.labels_match(pb.Labels(regions=[box(0, 0), box(5, 0)]), truth)  # both on one box


def test_gold_spans_are_exact() -> None:
    """Span gold: the same (label, start, end) set."""
    truth = pb.Labels(regions=[span("name", 0, 4)])
    assert scoring.labels_match(pb.Labels(regions=[span("name", 0, 4)]), truth)
    assert not scoring.labels_match(pb.Labels(regions=[span("name", 0, 5)]), truth)


def test_reliability_defaults_then_follows_evidence() -> None:
    """0.7 without evidence; then Beta(2, 1) over gold and consensus together."""
    assert scoring.reliability(gold_correct=0, gold_answered=0, agreed=0, accepted_votes=0) == 0.7
    assert scoring.reliability(gold_correct=1, gold_answered=1, agreed=0, accepted_votes=0) == pytest.approx(
        0.75
    )
    assert scoring.reliability(gold_correct=0, gold_answered=2, agreed=0, accepted_votes=2) == pytest.approx(
        2 / 7
    )


def test_weighted_confidence_uses_reliabilities_majority_uses_the_share() -> None:
    """Two agreeing votes: posterior 0.845 at 0.7 each, higher for reliable workers; MAJORITY gives 1.0."""
    votes = [("w1", pb.Labels(classes=["cat"])), ("w2", pb.Labels(classes=["cat"]))]

    def confidence(votes: list[tuple[str, pb.Labels]], method: int, **reliabilities: float) -> float:
        return scoring.score(
            votes, mode=SINGLE, classes=["cat", "dog"], reliabilities=reliabilities, method=method
        ).confidence

    assert confidence(votes, WEIGHTED) == pytest.approx(0.49 / 0.58)
    assert confidence(votes, WEIGHTED, w1=0.95, w2=0.95) > 0.99
    assert confidence(votes, MAJORITY) == 1.0
    assert confidence([*votes, ("w3", pb.Labels(classes=["dog"]))], MAJORITY) == pytest.approx(2 / 3)


def test_weighted_fusion_pulls_boxes_to_reliable_workers() -> None:
    """WEIGHTED: the fused box leans to the reliable worker and its confidence is the weighted support;
    MAJORITY keeps the plain mean."""
    votes = [("good", pb.Labels(regions=[box(0, 0)])), ("poor", pb.Labels(regions=[box(20, 0)]))]
    weighted = scoring.score(
        votes, mode=0, classes=[], reliabilities={"good": 0.9, "poor": 0.1}, method=WEIGHTED
    )
    (fused,) = weighted.result.labels.regions
    assert fused.box.x < 5.0  # weighted centre (crowd's default), next to the reliable box at 0
    assert weighted.confidence == pytest.approx(1.0)
    plain = scoring.score(
        votes, mode=0, classes=[], reliabilities={"good": 0.9, "poor": 0.1}, method=MAJORITY
    )
    assert plain.result.labels.regions[0].box.x == pytest.approx(10.0)
    lonely = [("good", pb.Labels(regions=[box(0, 0)])), ("poor", pb.Labels()), ("other", pb.Labels())]
    nothing = scoring.score(lonely, mode=0, classes=[], reliabilities={}, method=WEIGHTED)
    assert list(nothing.result.labels.regions) == []
    assert nothing.confidence == pytest.approx(2 / 3)  # the share that drew nothing
