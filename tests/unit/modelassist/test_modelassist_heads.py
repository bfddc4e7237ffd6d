"""The softmax head of modelassist/heads.py and its bootstrap committees."""

from __future__ import annotations

import numpy as np
import pytest
from annocloud_server.modelassist.heads import (
    HeadError,
    committee_probabilities,
    fit_committee,
    fit_head,
)


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    labels = np.repeat(np.arange(3), 30)
    return centres[labels] + rng.normal(scale=0.5, size=(90, 2)), labels


@pytest.mark.parametrize("solver", ["lbfgs", "gd"])
def test_head_learns_separable_blobs(solver: str) -> None:
    """Both solvers classify three well-separated blobs perfectly with confident probabilities."""
    x, y = blobs()
    head = fit_head(x, y, 3, solver=solver)  # type: ignore[arg-type]
    assert (head.predict(x) == y).all()
    assert head.predict_proba(x)[np.arange(90), y].min() > 0.8


def test_solvers_agree() -> None:
    """Gradient descent reaches nearly the same probabilities as L-BFGS on the same problem."""
    x, y = blobs(1)
    lbfgs = fit_head(x, y, 3, solver="lbfgs", max_iter=500).predict_proba(x)
    gd = fit_head(x, y, 3, solver="gd", max_iter=500).predict_proba(x)
    assert np.abs(lbfgs - gd).max() < 0.02


def test_probabilities_are_distributions() -> None:
    """Each probability row is non-negative and sums to one, also for classes never labelled."""
    x, y = blobs()
    head = fit_head(x, y, 5)
    p = head.predict_proba(x)
    assert p.shape == (90, 5)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert (p[:, 3:] > 0).all()


def test_fit_is_deterministic() -> None:
    """Fitting twice on the same data gives identical weights."""
    x, y = blobs()
    first, second = fit_head(x, y, 3), fit_head(x, y, 3)
    assert np.array_equal(first.weights, second.weights)
    assert np.array_equal(first.bias, second.bias)


def test_stronger_l2_shrinks_weights() -> None:
    """A larger l2 penalty yields a smaller weight norm."""
    x, y = blobs()
    weak, strong = fit_head(x, y, 3, l2=0.1), fit_head(x, y, 3, l2=100.0)
    assert np.linalg.norm(strong.weights) < np.linalg.norm(weak.weights)


@pytest.mark.parametrize(
    ("features", "labels", "n_classes"),
    [
        (np.zeros((3, 2)), [0, 1], 2),
        (np.zeros((2, 2)), [0, 2], 2),
        (np.zeros((0, 2)), [], 2),
        (np.zeros(4), [0, 1, 0, 1], 2),
    ],
)
def test_bad_training_data_is_refused(features: np.ndarray, labels: list[int], n_classes: int) -> None:
    """Mismatched lengths, out-of-range labels, empty sets and non-matrix features raise HeadError."""
    with pytest.raises(HeadError):
        fit_head(features, labels, n_classes)


def test_predict_refuses_wrong_width() -> None:
    """Predicting on vectors of another dimension raises HeadError."""
    x, y = blobs()
    with pytest.raises(HeadError):
        fit_head(x, y, 3).predict_proba(np.zeros((1, 3)))


def test_committee_is_seeded_and_diverse() -> None:
    """The same seed gives the same committee; bootstrap members differ from one another."""
    x, y = blobs()
    a = committee_probabilities(fit_committee(x, y, 3, size=4, seed=7), x)
    b = committee_probabilities(fit_committee(x, y, 3, size=4, seed=7), x)
    assert a.shape == (4, 90, 3)
    assert np.array_equal(a, b)
    assert not np.allclose(a[0], a[1])
