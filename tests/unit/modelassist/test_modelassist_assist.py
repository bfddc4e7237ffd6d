"""The pure decisions of the modelassist service: pre-labels, suggestion survival, queue priorities,
rescoring with a head, the cold start."""

from __future__ import annotations

import numpy as np
from annocloud_server.modelassist import assist


def test_prelabel_drops_low_scores_and_scores_an_empty_answer_as_sure() -> None:
    """Boxes under min_score are dropped; the score is their mean, 1.0 when nothing is left."""
    found = [assist.Detection((0, 0, 10, 10), 0.9), assist.Detection((5, 5, 10, 10), 0.2)]
    kept = assist.prelabel(found, label="plate", min_score=0.5)
    assert (kept.boxes, kept.score, kept.label) == (((0, 0, 10, 10),), 0.9, "plate")
    assert assist.prelabel(found, label="plate", min_score=0.95).score == 1.0


def test_survival_counts_unchanged_adjusted_deleted_and_added_boxes() -> None:
    """A box kept exactly, one moved, one deleted and one drawn from scratch are each counted."""
    suggested = {"plate": [(0, 0, 100, 20), (200, 0, 100, 20), (400, 400, 50, 50)]}
    submitted = {"plate": [(0, 0, 100, 20), (210, 2, 100, 20), (600, 10, 30, 30)]}
    result = assist.survival(suggested, submitted)
    assert (result.suggested, result.unchanged, result.adjusted, result.deleted, result.added) == (
        3,
        1,
        1,
        1,
        1,
    )
    assert result.kept_ious[0] == 1.0
    assert 0.5 <= result.kept_ious[1] < assist.UNCHANGED_IOU


def test_survival_sees_a_class_change() -> None:
    """Classes the annotator changed are flagged; the same classes in another order are not."""
    assert assist.survival({}, {}, suggested_classes=["cat"], submitted_classes=["dog"]).classes_changed
    assert not assist.survival(
        {}, {}, suggested_classes=["a", "b"], submitted_classes=["b", "a"]
    ).classes_changed


def test_priorities_run_from_99_for_the_first_rank_to_1_for_the_last() -> None:
    """Rank 0 → 99, last rank → 1, monotone in between; a single item gets 99."""
    prio = assist.priorities([2, 0, 1], 3)
    assert prio == [50, 1, 99]
    assert assist.priorities([0], 1) == [99]


def _two_blobs() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    a = rng.normal(-2.0, 0.3, (20, 2))
    b = rng.normal(2.0, 0.3, (20, 2))
    return np.vstack([a, b]), ["neg"] * 20 + ["pos"] * 20


def test_margin_rescoring_puts_the_items_on_the_boundary_first() -> None:
    """A head trained on two clusters ranks the point between them above points deep inside them."""
    x, y = _two_blobs()
    head, _ = assist.train(embeddings=x, labels=y, classes=["neg", "pos"])
    assert head is not None
    pool = np.array([[-3.0, -3.0], [0.05, -0.02], [3.0, 3.0]])
    scored = assist.rescore(
        items=["deep-neg", "edge", "deep-pos"],
        embeddings=pool,
        strategy="SAMPLING_STRATEGY_MARGIN",
        head=head,
    )
    by_item = {s.item: s for s in scored}
    assert by_item["edge"].priority == 99
    assert by_item["edge"].uncertainty > by_item["deep-neg"].uncertainty
    assert by_item["edge"].uncertainty > by_item["deep-pos"].uncertainty


def test_no_head_until_two_classes_are_labeled() -> None:
    """With labels of one class only there is nothing to train: the cold start applies."""
    x, _ = _two_blobs()
    assert assist.train(embeddings=x[:5], labels=["neg"] * 5, classes=["neg", "pos"]) == (None, [])


def test_diversity_cold_start_spreads_the_first_picks() -> None:
    """k-center order: the first two picks come from different clusters; every item is ranked once."""
    x, _ = _two_blobs()
    items = [f"i{n}" for n in range(len(x))]
    scored = assist.cold_start_order(items=items, embeddings=x, diversity=True, seed=3)
    first_two = sorted(scored, key=lambda s: -s.priority)[:2]
    clusters = {int(items.index(s.item) >= 20) for s in first_two}
    assert clusters == {0, 1}
    assert sorted(s.priority for s in scored)[-1] == 99
    assert len({s.item for s in scored}) == len(items)


def test_committee_strategy_uses_vote_entropy() -> None:
    """COMMITTEE ranks with a bootstrap committee: unanimous points score 0, the boundary above 0."""
    x, y = _two_blobs()
    head, committee = assist.train(embeddings=x, labels=y, classes=["neg", "pos"], committee_size=5)
    pool = np.array([[-3.0, -3.0], [0.0, 0.0]])
    scored = assist.rescore(
        items=["deep", "edge"],
        embeddings=pool,
        strategy="SAMPLING_STRATEGY_COMMITTEE",
        head=head,
        committee=committee,
    )
    assert scored[0].uncertainty == 0.0
    assert scored[1].priority >= scored[0].priority
