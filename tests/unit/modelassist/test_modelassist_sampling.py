"""Uncertainty scores, committee disagreement, ranking and cold start of modelassist/sampling.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from annocloud_server.modelassist.sampling import (
    ColdStart,
    SamplingError,
    Strategy,
    cold_start,
    entropy,
    k_center_greedy,
    least_confidence,
    margin,
    rank,
    vote_entropy,
)

UNIFORM = [0.25, 0.25, 0.25, 0.25]
ONE_HOT = [0.0, 1.0, 0.0, 0.0]
SKEWED = [0.7, 0.1, 0.1, 0.1]
TIED_TOP = [0.45, 0.45, 0.05, 0.05]


def test_entropy_of_uniform_is_max_and_of_one_hot_is_zero() -> None:
    """A uniform row has entropy log k, a one-hot row zero, a skewed row in between."""
    scores = entropy([UNIFORM, ONE_HOT, SKEWED])
    assert scores[0] == pytest.approx(math.log(4))
    assert scores[1] == 0.0
    assert 0 < scores[2] < math.log(4)
    assert scores[2] == pytest.approx(-(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)))


def test_least_confidence_by_hand() -> None:
    """Least confidence is 1 - max p: 0.75 uniform, 0 one-hot, 0.3 skewed."""
    assert least_confidence([UNIFORM, ONE_HOT, SKEWED]) == pytest.approx([0.75, 0.0, 0.3])


def test_margin_by_hand() -> None:
    """Margin score is 1 - (p1 - p2): 1 when the top two tie, 0 for one-hot, 0.4 skewed."""
    assert margin([TIED_TOP, ONE_HOT, SKEWED, UNIFORM]) == pytest.approx([1.0, 0.0, 0.4, 1.0])


def test_margin_needs_two_classes() -> None:
    """A single-class probability matrix is refused by margin."""
    with pytest.raises(SamplingError):
        margin([[1.0]])


@pytest.mark.parametrize("strategy", [Strategy.LEAST_CONFIDENCE, Strategy.MARGIN, Strategy.ENTROPY])
def test_rank_puts_most_uncertain_first(strategy: Strategy) -> None:
    """Each uncertainty strategy ranks uniform before skewed before one-hot."""
    order = rank(strategy, probabilities=[ONE_HOT, SKEWED, UNIFORM])
    assert order.tolist() == [2, 1, 0]


def test_rank_breaks_ties_by_item_order() -> None:
    """Equal scores keep ascending index order, so repeated rankings are identical."""
    rows = [SKEWED, UNIFORM, SKEWED, UNIFORM, ONE_HOT]
    first = rank(Strategy.ENTROPY, probabilities=rows)
    assert first.tolist() == [1, 3, 0, 2, 4]
    assert np.array_equal(first, rank(Strategy.ENTROPY, probabilities=rows))


def test_random_rank_is_a_seeded_permutation() -> None:
    """Random ranking is a permutation that repeats for a seed and changes with it."""
    a = rank(Strategy.RANDOM, n_items=50, seed=3)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, rank(Strategy.RANDOM, n_items=50, seed=3))
    assert not np.array_equal(a, rank(Strategy.RANDOM, n_items=50, seed=4))
    assert len(rank(Strategy.RANDOM, probabilities=[UNIFORM] * 7)) == 7


def test_rank_without_its_input_is_refused() -> None:
    """Uncertainty ranking without probabilities and committee ranking without members raise."""
    with pytest.raises(SamplingError):
        rank(Strategy.MARGIN)
    with pytest.raises(SamplingError):
        rank(Strategy.COMMITTEE, probabilities=[UNIFORM])


def test_vote_entropy_is_zero_when_members_agree() -> None:
    """A committee whose members all vote the same class has zero disagreement, whatever its confidence."""
    members = np.array([[SKEWED, ONE_HOT], [[0.4, 0.2, 0.2, 0.2], [0.1, 0.6, 0.2, 0.1]]])
    assert vote_entropy(members).tolist() == [0.0, 0.0]


def test_vote_entropy_of_a_split_committee() -> None:
    """Two members voting class 0 and two voting class 1 give entropy log 2."""
    a, b = [0.9, 0.1], [0.2, 0.8]
    members = np.array([[a], [a], [b], [b]])
    assert vote_entropy(members)[0] == pytest.approx(math.log(2))


def test_committee_rank_orders_by_disagreement() -> None:
    """Committee ranking puts the item the members disagree on before the ones they agree on."""
    agree, left, right = [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]
    members = np.array([[agree, left, agree], [agree, right, agree], [agree, left, [0.8, 0.2]]])
    assert rank(Strategy.COMMITTEE, committee_probabilities=members).tolist()[0] == 1


def test_k_center_greedy_picks_spread_out_points() -> None:
    """From four tight clusters, k-center greedy picks one point in each cluster."""
    rng = np.random.default_rng(0)
    corners = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    cluster = np.repeat(np.arange(4), 25)
    points = corners[cluster] + rng.normal(scale=0.1, size=(100, 2))
    picks = k_center_greedy(points, 4, seed=1)
    assert sorted(cluster[picks].tolist()) == [0, 1, 2, 3]


def test_k_center_greedy_avoids_already_selected() -> None:
    """With points already selected, the new picks are far from them and never repeat them."""
    points = np.array([[0.0], [0.1], [5.0], [10.0], [10.1]])
    picks = k_center_greedy(points, 2, selected=[0])
    assert picks.tolist() == [4, 2]
    assert len(k_center_greedy(points, 10, selected=[0, 1])) == 3


def test_cold_start_strategies() -> None:
    """Random cold start is a seeded sample without repeats; k-center cold start is k-center greedy."""
    points = np.arange(40, dtype=float).reshape(20, 2)
    sample = cold_start(ColdStart.RANDOM, points, 5, seed=2)
    assert len(set(sample.tolist())) == 5
    assert np.array_equal(sample, cold_start(ColdStart.RANDOM, points, 5, seed=2))
    assert np.array_equal(
        cold_start(ColdStart.K_CENTER, points, 3, seed=2), k_center_greedy(points, 3, seed=2)
    )
