"""Majority vote, Dawid-Skene, one-coin, GLAD, MACE and the online posterior of crowd/classes.py."""

from __future__ import annotations

import numpy as np
import pytest
from annocloud_server.crowd.classes import (
    dawid_skene,
    glad,
    item_posterior,
    mace,
    majority_vote,
    one_coin,
)

CLASSES = ["a", "b", "c"]


def simulated(
    seed: int = 0, n_items: int = 300, *, biased: bool = True
) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """Two workers right 75% of the time (else random), two spammers, optionally one who says c for a."""
    rng = np.random.default_rng(seed)
    truth = {f"i{i}": CLASSES[int(rng.integers(3))] for i in range(n_items)}
    votes: list[tuple[str, str, str]] = []
    for item, label in truth.items():
        for worker in ("good1", "good2"):
            answer = label if rng.random() < 0.75 else CLASSES[int(rng.integers(3))]
            votes.append((item, worker, answer))
        if biased:
            votes.append((item, "biased", "c" if label == "a" else label))
        for worker in ("spam1", "spam2"):
            votes.append((item, worker, CLASSES[int(rng.integers(3))]))
    return votes, truth


def accuracy(posteriors: dict[str, object], truth: dict[str, str]) -> float:
    return float(np.mean([posteriors[i].label == t for i, t in truth.items()]))  # type: ignore[attr-defined]


def test_majority_vote_shares_and_lexicographic_tie_break() -> None:
    """The winner's share is the confidence, and a tie goes to the smallest label."""
    votes = [("x", "w1", "b"), ("x", "w2", "b"), ("x", "w3", "a"), ("y", "w1", "c"), ("y", "w2", "b")]
    result = majority_vote(votes)
    assert result["x"].label == "b"
    assert result["x"].confidence == pytest.approx(2 / 3)
    assert result["x"].distribution == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert result["y"].label == "b"
    assert result["y"].confidence == pytest.approx(0.5)


def test_dawid_skene_beats_majority_vote_with_a_biased_worker() -> None:
    """DS learns the biased worker's a→c confusion and the spammers, and beats majority vote."""
    votes, truth = simulated()
    ds = dawid_skene(votes)
    assert accuracy(ds.posteriors, truth) > accuracy(majority_vote(votes), truth) + 0.05
    biased = ds.confusion["biased"]
    a, c = ds.classes.index("a"), ds.classes.index("c")
    assert biased[a, c] > 0.8
    assert np.allclose(biased.sum(axis=1), 1.0)
    assert ds.worker_accuracy["good1"] > ds.worker_accuracy["spam1"]


def test_one_coin_is_captured_by_a_consistent_biased_worker() -> None:
    """One-coin cannot express a→c, so a biased worker on every item captures it; DS is not fooled."""
    votes, truth = simulated()
    captured = one_coin(votes)
    assert captured.worker_accuracy["biased"] > 0.95
    assert accuracy(dawid_skene(votes).posteriors, truth) > accuracy(captured.posteriors, truth) + 0.1


def test_one_coin_ranks_workers_and_beats_majority_vote() -> None:
    """One-coin gives spammers the lowest reliability and aggregates better than majority vote."""
    votes, truth = simulated(seed=1, biased=False)
    result = one_coin(votes)
    acc = result.worker_accuracy
    assert min(acc["good1"], acc["good2"]) > max(acc["spam1"], acc["spam2"]) + 0.2
    assert accuracy(result.posteriors, truth) > accuracy(majority_vote(votes), truth)


def test_one_coin_clamps_gold_items_and_learns_from_them() -> None:
    """Gold items keep their true label, and gold exposes a worker who agrees with a colluding majority."""
    truth = {f"i{i}": ["a", "b"][i % 2] for i in range(40)}
    votes = []
    for item, label in truth.items():
        wrong = "b" if label == "a" else "a"
        votes += [(item, "liar1", wrong), (item, "liar2", wrong), (item, "honest", label)]
    gold = {f"i{i}": truth[f"i{i}"] for i in range(10)}
    plain = one_coin(votes)
    clamped = one_coin(votes, gold=gold)
    assert all(
        clamped.posteriors[i].label == t and clamped.posteriors[i].confidence == 1.0 for i, t in gold.items()
    )
    assert plain.worker_accuracy["honest"] < 0.5
    assert clamped.worker_accuracy["honest"] > clamped.worker_accuracy["liar1"]
    assert accuracy(clamped.posteriors, truth) == 1.0
    assert accuracy(plain.posteriors, truth) == 0.0


def test_glad_and_mace_beat_majority_vote_with_spammers() -> None:
    """GLAD and MACE both recover the truth better than majority vote and spot the spammers."""
    votes, truth = simulated(seed=2, biased=False)
    mv = accuracy(majority_vote(votes), truth)
    g = glad(votes)
    m = mace(votes)
    assert accuracy(g.posteriors, truth) > mv
    assert accuracy(m.posteriors, truth) > mv
    assert g.ability["good1"] > g.ability["spam1"]
    assert m.competence["good1"] > m.competence["spam2"]


def test_aggregation_is_deterministic() -> None:
    """The same votes in another order give the same labels (and confidences up to rounding)."""
    votes, _ = simulated(seed=3, n_items=60)
    shuffled = [votes[i] for i in np.random.default_rng(0).permutation(len(votes))]
    for method in (dawid_skene, one_coin, glad, mace):
        first, second = method(votes).posteriors, method(shuffled).posteriors  # type: ignore[operator]
        assert {i: p.label for i, p in first.items()} == {i: p.label for i, p in second.items()}
        assert [p.confidence for p in first.values()] == pytest.approx(
            [p.confidence for p in second.values()]
        )


def test_item_posterior_combines_reliabilities() -> None:
    """A reliable worker outweighs two unreliable ones, and the one-coin formula is exact."""
    acc = {"good": 0.95, "weak1": 0.4, "weak2": 0.4}
    post = item_posterior(
        [("good", "a"), ("weak1", "b"), ("weak2", "b")], worker_accuracy=acc, classes=CLASSES
    )
    assert post.label == "a"
    single = item_posterior([("good", "a")], worker_accuracy=acc, classes=CLASSES)
    assert single.confidence == pytest.approx(0.95)
    assert single.distribution["b"] == pytest.approx(0.025)


def test_item_posterior_clamps_accuracy_and_defaults_unknown_workers() -> None:
    """A claimed 100% worker gives at most 0.99, a sub-chance one still counts for its label."""
    sure = item_posterior([("w", "b")], worker_accuracy={"w": 1.0}, classes=CLASSES)
    assert sure.confidence == pytest.approx(0.99)
    weak = item_posterior([("w", "b")], worker_accuracy={"w": 0.0}, classes=CLASSES)
    assert weak.label == "b"
    assert weak.confidence > 1 / 3
    new = item_posterior([("new", "c")], worker_accuracy={}, classes=CLASSES, default_accuracy=0.7)
    assert new.confidence == pytest.approx(0.7)


def test_item_posterior_prior_and_empty_votes() -> None:
    """With no votes the posterior is the prior; ties go to the smallest label."""
    empty = item_posterior([], worker_accuracy={}, classes=CLASSES)
    assert empty.label == "a"
    assert empty.confidence == pytest.approx(1 / 3)
    skewed = item_posterior([], worker_accuracy={}, classes=CLASSES, prior={"c": 3.0, "a": 1.0})
    assert skewed.label == "c"
    assert skewed.distribution["b"] == 0.0


def test_item_posterior_refuses_unknown_labels() -> None:
    """A label outside the classes (an unfiltered "not sure") is a ValueError."""
    with pytest.raises(ValueError, match="not one of the classes"):
        item_posterior([("w", "not sure")], worker_accuracy={}, classes=CLASSES)
    with pytest.raises(ValueError, match="empty"):
        item_posterior([], worker_accuracy={}, classes=[])


def test_aggregators_refuse_no_votes() -> None:
    """Every batch method needs at least one vote."""
    for method in (majority_vote, dawid_skene, one_coin, glad, mace):
        with pytest.raises(ValueError, match="no votes"):
            method([])
