"""Box clustering and fusion, keypoint and span voting, and worker box quality (crowd/geometry.py)."""

from __future__ import annotations

import pytest
from annocloud_server.crowd.geometry import (
    average_boxes,
    cluster_boxes,
    fuse_boxes,
    fuse_keypoints,
    iou,
    vote_spans,
    worker_box_quality,
)

TRUE = (100.0, 100.0, 50.0, 50.0)


def test_iou_values() -> None:
    """IoU is 1 for equal boxes, 0 for disjoint or empty ones, and 1/3 for a half shift."""
    assert iou(TRUE, TRUE) == 1.0
    assert iou(TRUE, (300.0, 300.0, 10.0, 10.0)) == 0.0
    assert iou(TRUE, (100.0, 100.0, 0.0, 50.0)) == 0.0
    assert iou((0.0, 0.0, 2.0, 1.0), (1.0, 0.0, 2.0, 1.0)) == pytest.approx(1 / 3)


def test_cluster_boxes_one_box_per_worker() -> None:
    """Two boxes of the same worker on one object never share a cluster."""
    clusters = cluster_boxes(
        [("w1", [TRUE, (101.0, 101.0, 50.0, 50.0)]), ("w2", [(102.0, 100.0, 50.0, 50.0)])]
    )
    assert sorted(len(c.members) for c in clusters) == [1, 2]
    assert all(len(set(c.workers)) == len(c.workers) for c in clusters)


def test_average_boxes_needs_a_majority() -> None:
    """Plain averaging keeps a box two of three workers drew, at the coordinate mean."""
    fused = average_boxes(
        [("w1", [(100.0, 100.0, 50.0, 50.0)]), ("w2", [(110.0, 100.0, 50.0, 50.0)]), ("w3", [])]
    )
    assert len(fused) == 1
    assert fused[0].box == pytest.approx((105.0, 100.0, 50.0, 50.0))
    assert fused[0].confidence == pytest.approx(2 / 3)
    assert average_boxes([("w1", [TRUE]), ("w2", []), ("w3", [])]) == []


def test_fuse_boxes_ignores_a_spammer_majority() -> None:
    """One trusted worker outvotes two low-weight spammers who agree on a fake box."""
    fake = (400.0, 300.0, 60.0, 60.0)
    annotations = [("good", [TRUE]), ("spam1", [fake]), ("spam2", [(401.0, 301.0, 60.0, 60.0)])]
    weights = {"good": 0.9, "spam1": 0.05, "spam2": 0.05}
    fused = fuse_boxes(annotations, weights=weights)
    assert [f.box for f in fused] == [TRUE]
    assert fused[0].support_workers == ("good",)
    assert fused[0].confidence == pytest.approx(0.9)
    assert [f.box for f in average_boxes(annotations)] == [pytest.approx((400.5, 300.5, 60.0, 60.0))]


def test_fuse_boxes_weighted_mean_and_median() -> None:
    """The weighted mean leans to the heavy worker; the default weighted median ignores an outlier's pull."""
    annotations = [("a", [(100.0, 100.0, 50.0, 50.0)]), ("b", [(110.0, 100.0, 50.0, 50.0)])]
    fused = fuse_boxes(annotations, weights={"a": 3.0, "b": 1.0}, center="mean")
    assert fused[0].box == pytest.approx((102.5, 100.0, 50.0, 50.0))
    three = [*annotations, ("c", [(120.0, 100.0, 50.0, 50.0)])]
    median = fuse_boxes(three, weights={"a": 1.0, "b": 1.0, "c": 1.0})
    assert median[0].box == pytest.approx((110.0, 100.0, 50.0, 50.0))


def test_fuse_boxes_needs_every_weight() -> None:
    """A worker without a weight is a ValueError, and all-zero weights keep nothing."""
    with pytest.raises(ValueError, match="no weight"):
        fuse_boxes([("w1", [TRUE])], weights={})
    assert fuse_boxes([("w1", [TRUE])], weights={"w1": 0.0}) == []


def test_fuse_keypoints_weighted_position_and_visibility() -> None:
    """Positions average over the workers who saw the point; visibility follows the weighted vote."""
    annotations = [
        ("a", [(10.0, 10.0, 2), (0.0, 0.0, 0)]),
        ("b", [(20.0, 10.0, 2), (5.0, 5.0, 1)]),
        ("c", [(0.0, 0.0, 0), (0.0, 0.0, 0)]),
    ]
    fused = fuse_keypoints(annotations, weights={"a": 1.0, "b": 3.0, "c": 1.0})
    assert fused[0] == pytest.approx((17.5, 10.0, 2))
    assert fused[1] == (5.0, 5.0, 1)
    assert fuse_keypoints(annotations, weights={"a": 1.0, "b": 0.5, "c": 1.0})[1] == (0.0, 0.0, 0)


def test_vote_spans_weighted_support() -> None:
    """An exact span is kept only when its weighted support exceeds min_support."""
    annotations = [
        ("a", [("PER", 0, 5), ("LOC", 10, 14)]),
        ("b", [("PER", 0, 5)]),
        ("c", [("PER", 0, 6), ("LOC", 10, 14)]),
    ]
    kept = vote_spans(annotations, weights={"a": 1.0, "b": 1.0, "c": 2.0})
    assert [s for s, _ in kept] == [("LOC", 10, 14)]
    assert kept[0][1] == pytest.approx(0.75)


def test_worker_box_quality_separates_good_from_spam() -> None:
    """Consensus-based quality ranks accurate workers above a random-box spammer and an offset adversary."""
    items = {}
    for i in range(20):
        truth = (10.0 * i, 50.0, 40.0, 40.0)
        x, y, w, h = truth
        items[f"s{i}"] = [
            ("good1", [truth]),
            ("good2", [(x + 1, y + 1, w, h)]),
            ("good3", [(x - 1, y, w + 1, h)]),
            ("spam", [(500.0 - 7 * i, 400.0, 30.0, 30.0)]),
            ("adversary", [(x + 28, y + 28, w, h)]),
        ]
    quality = worker_box_quality(items)
    assert min(quality["good1"], quality["good2"], quality["good3"]) > 0.8
    assert quality["spam"] < 0.1
    assert quality["adversary"] < 0.2
    with_gold = worker_box_quality(items, gold={"s0": [(0.0, 50.0, 40.0, 40.0)]})
    assert with_gold["good1"] >= with_gold["good2"]
