"""A multinomial logistic-regression head on feature vectors, and bootstrap committees of heads.

The head is what a project retrains after every K accepted labels: embeddings in, class
probabilities out. Training minimises the summed cross-entropy plus ``l2 / 2 * ||W||²`` (the bias is
not penalised), so ``l2 = 1`` matches scikit-learn's ``C = 1``. The weights start at zero and both
solvers are deterministic: the same features and labels always give the same head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Solver = Literal["auto", "lbfgs", "gd"]
Objective = Callable[[NDArray[np.float64]], tuple[float, NDArray[np.float64]]]


class HeadError(ValueError):
    """Training data a head cannot be fitted on (shapes, label range, empty set)."""


@dataclass(frozen=True)
class SoftmaxHead:
    """Fitted weights ``(n_features, n_classes)`` and bias ``(n_classes,)``."""

    weights: NDArray[np.float64]
    bias: NDArray[np.float64]

    @property
    def n_classes(self) -> int:
        return int(self.bias.shape[0])

    def logits(self, features: ArrayLike) -> NDArray[np.float64]:
        x = _as_matrix(features, self.weights.shape[0])
        return x @ self.weights + self.bias

    def predict_proba(self, features: ArrayLike) -> NDArray[np.float64]:
        """Rows of class probabilities, one per feature vector."""
        return _softmax(self.logits(features))

    def predict(self, features: ArrayLike) -> NDArray[np.intp]:
        return np.asarray(np.argmax(self.logits(features), axis=1), dtype=np.intp)


def fit_head(
    features: ArrayLike,
    labels: ArrayLike,
    n_classes: int,
    *,
    l2: float = 1.0,
    max_iter: int = 300,
    solver: Solver = "auto",
) -> SoftmaxHead:
    """Fit a softmax head. ``auto`` uses scipy's L-BFGS when scipy is importable, else gradient descent.

    Classes with no labelled example yet are allowed: their weights stay near zero, so they get a
    small, non-zero probability everywhere.
    """
    x = _as_matrix(features, None)
    y = np.asarray(labels, dtype=np.intp).reshape(-1)
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise HeadError(f"need as many labels as feature rows, got {y.shape[0]} and {x.shape[0]}")
    if n_classes < 2 or y.min() < 0 or y.max() >= n_classes:
        raise HeadError(f"labels must lie in [0, {n_classes}) with n_classes >= 2")
    if l2 <= 0:
        raise HeadError("l2 must be positive (it keeps the problem strictly convex)")
    n_features = x.shape[1]
    objective = _objective(x, np.eye(n_classes)[y], l2, n_features, n_classes)
    start = np.zeros((n_features + 1) * n_classes)
    if solver == "auto":
        solver = "lbfgs" if _scipy_minimize() is not None else "gd"
    if solver == "lbfgs":
        theta = _fit_lbfgs(objective, start, max_iter)
    else:
        theta = _fit_gd(objective, start, max_iter, _lipschitz(x, l2))
    packed = theta.reshape(n_features + 1, n_classes)
    return SoftmaxHead(weights=packed[:-1].copy(), bias=packed[-1].copy())


def fit_committee(
    features: ArrayLike,
    labels: ArrayLike,
    n_classes: int,
    *,
    size: int = 5,
    seed: int = 0,
    l2: float = 1.0,
    max_iter: int = 300,
    solver: Solver = "auto",
) -> list[SoftmaxHead]:
    """``size`` heads, each fitted on a bootstrap resample (with replacement) of the labelled set."""
    x = _as_matrix(features, None)
    y = np.asarray(labels, dtype=np.intp).reshape(-1)
    rng = np.random.default_rng(seed)
    committee = []
    for _ in range(size):
        rows = rng.integers(0, x.shape[0], size=x.shape[0])
        committee.append(fit_head(x[rows], y[rows], n_classes, l2=l2, max_iter=max_iter, solver=solver))
    return committee


def committee_probabilities(committee: Sequence[SoftmaxHead], features: ArrayLike) -> NDArray[np.float64]:
    """Member probabilities stacked as ``(members, items, classes)``."""
    return np.stack([head.predict_proba(features) for head in committee])


def _objective(
    x: NDArray[np.float64], onehot: NDArray[np.float64], l2: float, n_features: int, n_classes: int
) -> Objective:
    def loss_and_grad(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        packed = theta.reshape(n_features + 1, n_classes)
        weights, bias = packed[:-1], packed[-1]
        logits = x @ weights + bias
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_norm
        loss = -float((onehot * log_p).sum()) + 0.5 * l2 * float((weights * weights).sum())
        residual = np.exp(log_p) - onehot
        grad = np.vstack([x.T @ residual + l2 * weights, residual.sum(axis=0, keepdims=True)])
        return loss, grad.reshape(-1)

    return loss_and_grad


def _fit_lbfgs(objective: Objective, start: NDArray[np.float64], max_iter: int) -> NDArray[np.float64]:
    minimize = _scipy_minimize()
    if minimize is None:
        raise HeadError("solver 'lbfgs' needs scipy")
    result = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return np.asarray(result.x, dtype=np.float64)


def _fit_gd(
    objective: Objective, start: NDArray[np.float64], max_iter: int, lipschitz: float
) -> NDArray[np.float64]:
    """Nesterov-accelerated gradient descent with step ``1 / L`` (no scipy needed)."""
    step = 1.0 / lipschitz
    theta = previous = start
    for k in range(1, max_iter + 1):
        lookahead = theta + (k - 1) / (k + 2) * (theta - previous)
        _, grad = objective(lookahead)
        previous, theta = theta, lookahead - step * grad
    return theta


def _lipschitz(x: NDArray[np.float64], l2: float) -> float:
    # The softmax cross-entropy Hessian is bounded by 1/2 * [x, 1]ᵀ[x, 1] per class block.
    augmented = np.hstack([x, np.ones((x.shape[0], 1))])
    return 0.5 * float(np.linalg.norm(augmented, ord=2)) ** 2 + l2


def _scipy_minimize() -> Callable[..., Any] | None:
    try:
        from scipy.optimize import minimize  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    return minimize  # type: ignore[no-any-return,unused-ignore]


def _as_matrix(features: ArrayLike, n_features: int | None) -> NDArray[np.float64]:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        expected = "n_features" if n_features is None else str(n_features)
        raise HeadError(f"features must be a (rows, {expected}) matrix, got shape {x.shape}")
    return x


def _softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float64)
