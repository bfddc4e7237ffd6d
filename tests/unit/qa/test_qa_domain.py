"""Aggregation and decision rules of qa/domain.py."""

from __future__ import annotations

import pytest
from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.qa import domain

SINGLE = tasks_pb2.CLASSIFICATION_MODE_SINGLE
MULTI = tasks_pb2.CLASSIFICATION_MODE_MULTI
NONE = tasks_pb2.CLASSIFICATION_MODE_UNSPECIFIED


def votes(*classes: list[str]) -> list[pb.Labels]:
    return [pb.Labels(classes=c) for c in classes]


def box(x: float, y: float, w: float = 100, h: float = 100, label: str = "car", **attrs: str) -> pb.Region:
    return pb.Region(label=label, box=pb.Box(x=x, y=y, width=w, height=h), attributes=attrs)


def test_single_majority_wins() -> None:
    """Two 'cat' against one 'dog' gives 'cat' with agreement 2/3."""
    result = domain.aggregate(votes(["cat"], ["dog"], ["cat"]), mode=SINGLE)
    assert list(result.labels.classes) == ["cat"]
    assert not result.tie
    assert result.agreement == pytest.approx(2 / 3)


def test_single_tie_and_all_not_sure_go_to_review() -> None:
    """A 1-1 tie and all-'not sure' both flag a tie; 'not sure' votes do not count toward a class."""
    tie = domain.aggregate(votes(["cat"], ["dog"]), mode=SINGLE)
    assert tie.tie
    assert domain.decide(tie, policy=0, min_agreement=0.0) == qa_pb2.REVIEW_REASON_TIE
    unsure = domain.aggregate([pb.Labels(not_sure=True), pb.Labels(not_sure=True)], mode=SINGLE)
    assert unsure.tie
    mixed = domain.aggregate(
        [pb.Labels(not_sure=True), pb.Labels(classes=["cat"]), pb.Labels(classes=["cat"])], mode=SINGLE
    )
    assert list(mixed.labels.classes) == ["cat"]
    assert not mixed.tie


def test_multi_keeps_classes_of_more_than_half() -> None:
    """MULTI keeps a class chosen by more than half of the votes and drops the rest."""
    result = domain.aggregate(votes(["cat", "dog"], ["cat"], ["cat", "bird"]), mode=MULTI)
    assert list(result.labels.classes) == ["cat"]
    assert not result.tie
    assert 0 < result.agreement < 1


def test_boxes_cluster_and_outlier_dropped() -> None:
    """Two annotators' overlapping boxes merge to their mean; a third annotator's far box is dropped."""
    labels = [
        pb.Labels(regions=[box(10, 10, color="red")]),
        pb.Labels(regions=[box(14, 12, color="red")]),
        pb.Labels(regions=[box(400, 300, color="blue")]),
    ]
    result = domain.aggregate(labels, mode=NONE)
    assert len(result.labels.regions) == 1
    merged = result.labels.regions[0]
    assert (merged.box.x, merged.box.y, merged.box.width) == (12, 11, 100)
    assert merged.attributes["color"] == "red"
    assert result.agreement > 0.9
    assert domain.decide(result, policy=tasks_pb2.REVIEW_POLICY_DISAGREEMENT, min_agreement=0.7) == 0


def test_one_box_per_annotator_per_cluster() -> None:
    """Two boxes of one annotator on the same object never count as two supporters."""
    labels = [pb.Labels(regions=[box(10, 10), box(12, 12)]), pb.Labels(), pb.Labels()]
    result = domain.aggregate(labels, mode=NONE)
    assert len(result.labels.regions) == 0
    assert result.agreement == 0.0


def test_no_boxes_means_full_box_agreement() -> None:
    """Without regions the geometry components agree fully."""
    result = domain.aggregate(votes(["cat"], ["cat"]), mode=SINGLE)
    assert result.components["boxes"] == 1.0
    assert result.agreement == 1.0


def test_low_agreement_and_policy_all() -> None:
    """Loosely overlapping boxes fall under a high minimum; policy ALL reviews even full agreement."""
    loose = domain.aggregate([pb.Labels(regions=[box(0, 0)]), pb.Labels(regions=[box(10, 10)])], mode=NONE)
    assert len(loose.labels.regions) == 1
    assert domain.decide(loose, policy=0, min_agreement=0.95) == qa_pb2.REVIEW_REASON_LOW_AGREEMENT
    full = domain.aggregate(votes(["cat"], ["cat"]), mode=SINGLE)
    assert (
        domain.decide(full, policy=tasks_pb2.REVIEW_POLICY_ALL, min_agreement=0.5)
        == qa_pb2.REVIEW_REASON_POLICY
    )


def keypoints(*points: tuple[float, float, int]) -> pb.Region:
    return pb.Region(
        label="person",
        keypoints=pb.Keypoints(points=[pb.Keypoint(x=x, y=y, visibility=v) for x, y, v in points]),
    )


def test_keypoints_average_visible_points_and_majority_visibility() -> None:
    """Keypoints average over members that see the point; visibility is the majority value."""
    labels = [
        pb.Labels(regions=[keypoints((10, 10, 2), (50, 50, 2), (0, 0, 0))]),
        pb.Labels(regions=[keypoints((12, 10, 2), (52, 50, 1), (0, 0, 0))]),
        pb.Labels(regions=[keypoints((14, 10, 2), (0, 0, 0), (48, 48, 1))]),
    ]
    result = domain.aggregate(labels, mode=NONE)
    assert len(result.labels.regions) == 1
    points = result.labels.regions[0].keypoints.points
    assert (points[0].x, points[0].y, points[0].visibility) == (12, 10, 2)
    assert (points[1].x, points[1].visibility) == (51, 2)
    assert points[2].visibility == 0


def test_polygon_representative_is_most_central() -> None:
    """Of clustered polygons the one closest (bbox IoU) to the others is chosen."""

    def square(x: float, size: float) -> pb.Region:
        pts = [(x, 0), (x + size, 0), (x + size, size), (x, size)]
        return pb.Region(label="road", polygon=pb.Polygon(points=[pb.Point(x=a, y=b) for a, b in pts]))

    labels = [
        pb.Labels(regions=[square(0, 100)]),
        pb.Labels(regions=[square(5, 100)]),
        pb.Labels(regions=[square(10, 100)]),
    ]
    result = domain.aggregate(labels, mode=NONE)
    assert len(result.labels.regions) == 1
    assert result.labels.regions[0].polygon.points[0].x == 5


def test_spans_exact_voting() -> None:
    """A span shared by 2 of 3 annotators is kept; a span only one annotator marked is dropped."""

    def span(start: int, end: int) -> pb.Region:
        return pb.Region(label="name", span=pb.TextSpan(start=start, end=end))

    labels = [
        pb.Labels(regions=[span(0, 5), span(10, 13)]),
        pb.Labels(regions=[span(0, 5)]),
        pb.Labels(regions=[span(0, 4)]),
    ]
    result = domain.aggregate(labels, mode=NONE)
    assert [(r.span.start, r.span.end) for r in result.labels.regions] == [(0, 5)]
    assert 0 < result.components["spans"] < 1


def test_infer_mode_without_schema() -> None:
    """Without a schema, several classes in a vote mean MULTI, otherwise SINGLE or none."""
    assert domain.infer_mode(votes(["a"], ["b"])) == SINGLE
    assert domain.infer_mode(votes(["a", "b"], ["b"])) == MULTI
    assert domain.infer_mode([pb.Labels()]) == NONE
