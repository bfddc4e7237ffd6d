"""Aggregating categorical crowd votes into per-item posteriors.

Votes are ``(item, worker, label)`` triples. Methods: majority vote, Dawid-Skene (a full confusion
matrix per worker), one-coin Dawid-Skene (one reliability per worker, optionally with gold items),
GLAD (worker ability x item difficulty, Whitehill et al. 2009) and MACE (spam/competence,
Hovy et al. 2013); all EM methods start from the majority vote and are deterministic.

Default for the service: :func:`one_coin` with gold clamping. One parameter per worker is what a
few dozen labels can estimate, gold anchors it against a colluding majority, and it is the model
of :func:`item_posterior`, which drives dynamic overlap. In bench/crowd_bench.py it is best or tied
at 3 labels/item with 30-45% spammers (+16-20 points over majority vote, +2-3 over Dawid-Skene);
with 5 labels or few spammers Dawid-Skene is 1-2 points better (every simulated worker then has
enough labels for a confusion matrix, and the biased 1→7 workers are what one coin cannot express).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Vote = tuple[str, str, str]
"""(item, worker, label)."""

Array = NDArray[np.float64]

_EPS = 1e-3
_MAX_ACCURACY = 0.99


@dataclass(frozen=True)
class Posterior:
    """The most probable label of an item, its probability, and the whole distribution."""

    label: str
    confidence: float
    distribution: dict[str, float]


@dataclass(frozen=True)
class DawidSkeneResult:
    posteriors: dict[str, Posterior]
    confusion: dict[str, Array]
    """Per worker, ``confusion[true, answered]`` over :attr:`classes`; rows sum to 1."""
    priors: dict[str, float]
    classes: list[str]
    worker_accuracy: dict[str, float]
    """Expected share of the worker's votes that are correct under the posteriors."""
    iterations: int


@dataclass(frozen=True)
class OneCoinResult:
    posteriors: dict[str, Posterior]
    worker_accuracy: dict[str, float]
    priors: dict[str, float]
    iterations: int


@dataclass(frozen=True)
class GladResult:
    posteriors: dict[str, Posterior]
    ability: dict[str, float]
    """Worker ability alpha (negative = adversarial)."""
    difficulty: dict[str, float]
    """Item inverse difficulty beta = exp(b) > 0 (larger = easier)."""
    worker_accuracy: dict[str, float]
    iterations: int


@dataclass(frozen=True)
class MaceResult:
    posteriors: dict[str, Posterior]
    competence: dict[str, float]
    """Probability that the worker answers from knowledge rather than from their spam strategy."""
    strategy: dict[str, dict[str, float]]
    worker_accuracy: dict[str, float]
    iterations: int


@dataclass(frozen=True)
class _Encoded:
    items: list[str]
    workers: list[str]
    classes: list[str]
    item: NDArray[np.intp]
    worker: NDArray[np.intp]
    label: NDArray[np.intp]

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.items), len(self.workers), len(self.classes)


def _encode(votes: Sequence[Vote], extra_classes: Sequence[str] = ()) -> _Encoded:
    if not votes:
        raise ValueError("no votes")
    items = sorted({v[0] for v in votes})
    workers = sorted({v[1] for v in votes})
    classes = sorted({v[2] for v in votes} | set(extra_classes))
    item_index = {name: i for i, name in enumerate(items)}
    worker_index = {name: i for i, name in enumerate(workers)}
    class_index = {name: i for i, name in enumerate(classes)}
    return _Encoded(
        items,
        workers,
        classes,
        np.array([item_index[v[0]] for v in votes], dtype=np.intp),
        np.array([worker_index[v[1]] for v in votes], dtype=np.intp),
        np.array([class_index[v[2]] for v in votes], dtype=np.intp),
    )


def _vote_counts(enc: _Encoded) -> Array:
    n_items, _, n_classes = enc.shape
    counts = np.zeros((n_items, n_classes))
    np.add.at(counts, (enc.item, enc.label), 1.0)
    return counts


def _normalise_log(log_t: Array) -> Array:
    log_t = log_t - log_t.max(axis=1, keepdims=True)
    t = np.exp(log_t)
    return np.asarray(t / t.sum(axis=1, keepdims=True), dtype=np.float64)


def _posteriors(items: Sequence[str], classes: Sequence[str], t: Array) -> dict[str, Posterior]:
    """Winners by argmax over sorted classes, so ties go to the lexicographically smallest label."""
    winners = t.argmax(axis=1)
    return {
        item: Posterior(
            classes[int(w)], float(t[i, w]), {c: float(p) for c, p in zip(classes, t[i], strict=True)}
        )
        for i, (item, w) in enumerate(zip(items, winners, strict=True))
    }


def _expected_accuracy(enc: _Encoded, t: Array) -> dict[str, float]:
    correct = np.zeros(len(enc.workers))
    total = np.zeros(len(enc.workers))
    np.add.at(correct, enc.worker, t[enc.item, enc.label])
    np.add.at(total, enc.worker, 1.0)
    return {w: float(c / n) for w, c, n in zip(enc.workers, correct, total, strict=True)}


def majority_vote(votes: Sequence[Vote]) -> dict[str, Posterior]:
    """Per item, the most frequent label (ties: smallest label) and the vote shares."""
    enc = _encode(votes)
    counts = _vote_counts(enc)
    return _posteriors(enc.items, enc.classes, counts / counts.sum(axis=1, keepdims=True))


def dawid_skene(
    votes: Sequence[Vote], *, max_iter: int = 100, tol: float = 1e-6, smoothing: float = 0.01
) -> DawidSkeneResult:
    """Dawid & Skene (1979): EM over class priors and one full confusion matrix per worker."""
    enc = _encode(votes)
    n_items, n_workers, n_classes = enc.shape
    counts = _vote_counts(enc)
    t = counts / counts.sum(axis=1, keepdims=True)
    confusion = np.zeros((n_workers, n_classes, n_classes))
    priors = np.full(n_classes, 1.0 / n_classes)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported in the result
        priors = (t.sum(axis=0) + smoothing) / (n_items + smoothing * n_classes)
        confusion = np.full((n_workers, n_classes, n_classes), smoothing)
        for c in range(n_classes):
            np.add.at(confusion[:, c, :], (enc.worker, enc.label), t[enc.item, c])
        confusion /= confusion.sum(axis=2, keepdims=True)
        log_t = np.tile(np.log(priors), (n_items, 1))
        np.add.at(log_t, enc.item, np.log(confusion[enc.worker, :, enc.label]))
        new_t = _normalise_log(log_t)
        delta = float(np.abs(new_t - t).max())
        t = new_t
        if delta < tol:
            break
    return DawidSkeneResult(
        posteriors=_posteriors(enc.items, enc.classes, t),
        confusion={w: confusion[i] for i, w in enumerate(enc.workers)},
        priors={c: float(p) for c, p in zip(enc.classes, priors, strict=True)},
        classes=list(enc.classes),
        worker_accuracy=_expected_accuracy(enc, t),
        iterations=iterations,
    )


def _clamp_gold(enc: _Encoded, t: Array, gold: Mapping[str, str]) -> Array:
    index = {name: i for i, name in enumerate(enc.classes)}
    for i, item in enumerate(enc.items):
        if item in gold:
            t[i] = 0.0
            t[i, index[gold[item]]] = 1.0
    return t


def one_coin(
    votes: Sequence[Vote],
    *,
    max_iter: int = 50,
    tol: float = 1e-6,
    gold: Mapping[str, str] | None = None,
    prior_accuracy: tuple[float, float] = (2.0, 1.0),
    smoothing: float = 0.01,
) -> OneCoinResult:
    """One-coin Dawid-Skene: worker w is right with probability p_w, else uniform over the others.

    Gold items (item → true label) are clamped to their truth in every E-step, so they seed and keep
    anchoring the reliabilities. ``prior_accuracy`` = Beta pseudo-counts (right, wrong) added to
    every worker's expected counts; p_w stays in [0.01, 0.99].
    """
    gold = gold or {}
    enc = _encode(votes, extra_classes=sorted(set(gold.values())))
    n_items, n_workers, n_classes = enc.shape
    if n_classes < 2:
        return OneCoinResult(
            _posteriors(enc.items, enc.classes, np.ones((n_items, 1))),
            dict.fromkeys(enc.workers, 1.0),
            {enc.classes[0]: 1.0},
            0,
        )
    counts = _vote_counts(enc)
    t = _clamp_gold(enc, counts / counts.sum(axis=1, keepdims=True), gold)
    a, b = prior_accuracy
    accuracy: Array = np.full(n_workers, a / (a + b))
    priors = np.full(n_classes, 1.0 / n_classes)
    iterations = 0
    # The first M-step counts only the gold votes, so gold seeds the reliabilities (workers without
    # gold answers start at the prior mean) instead of their agreement with the majority.
    is_gold = np.array([item in gold for item in enc.items])[enc.item]
    seen = np.where(is_gold, 1.0, 0.0) if is_gold.any() else np.ones(len(enc.item))
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported in the result
        seen_votes = np.bincount(enc.worker, weights=seen, minlength=n_workers)
        correct = np.bincount(enc.worker, weights=seen * t[enc.item, enc.label], minlength=n_workers)
        accuracy = np.clip((correct + a) / (seen_votes + a + b), 0.01, _MAX_ACCURACY)
        seen = np.ones(len(enc.item))
        priors = (t.sum(axis=0) + smoothing) / (n_items + smoothing * n_classes)
        p = accuracy[enc.worker]
        wrong = np.log((1.0 - p) / (n_classes - 1))
        log_t = np.tile(np.log(priors), (n_items, 1))
        np.add.at(log_t, enc.item, wrong[:, None])
        np.add.at(log_t, (enc.item, enc.label), np.log(p) - wrong)
        new_t = _clamp_gold(enc, _normalise_log(log_t), gold)
        delta = float(np.abs(new_t - t).max())
        t = new_t
        if delta < tol:
            break
    return OneCoinResult(
        posteriors=_posteriors(enc.items, enc.classes, t),
        worker_accuracy={w: float(p) for w, p in zip(enc.workers, accuracy, strict=True)},
        priors={c: float(p) for c, p in zip(enc.classes, priors, strict=True)},
        iterations=iterations,
    )


def _sigmoid(x: Array) -> Array:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


def glad(
    votes: Sequence[Vote],
    *,
    max_iter: int = 100,
    tol: float = 1e-5,
    newton_steps: int = 5,
    smoothing: float = 0.01,
) -> GladResult:
    """GLAD: P(vote correct) = sigmoid(alpha_w * beta_i), wrong answers uniform over the other K-1 classes.

    EM with Gaussian priors alpha ~ N(1, 1), log beta ~ N(0, 1); the M-step takes a few clipped diagonal
    Newton steps on the expected log-likelihood (Whitehill et al. use gradient ascent).
    """
    enc = _encode(votes)
    n_items, n_workers, n_classes = enc.shape
    k_minus_1 = max(n_classes - 1, 1)
    counts = _vote_counts(enc)
    t = counts / counts.sum(axis=1, keepdims=True)
    alpha = np.ones(n_workers)
    log_beta = np.zeros(n_items)
    priors = np.full(n_classes, 1.0 / n_classes)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported in the result
        q = t[enc.item, enc.label]
        priors = (t.sum(axis=0) + smoothing) / (n_items + smoothing * n_classes)
        for _ in range(newton_steps):
            beta = np.exp(log_beta)
            z = alpha[enc.worker] * beta[enc.item]
            s = _sigmoid(z)
            resid = q - s
            curv = s * (1.0 - s)
            grad_a = np.bincount(enc.worker, resid * beta[enc.item], n_workers) - (alpha - 1.0)
            hess_a = np.bincount(enc.worker, curv * beta[enc.item] ** 2, n_workers) + 1.0
            grad_b = np.bincount(enc.item, resid * z, n_items) - log_beta
            hess_b = np.bincount(enc.item, curv * z**2, n_items) + 1.0
            alpha = alpha + np.clip(grad_a / hess_a, -1.0, 1.0)
            log_beta = np.clip(log_beta + np.clip(grad_b / hess_b, -1.0, 1.0), -5.0, 5.0)
        s = np.clip(_sigmoid(alpha[enc.worker] * np.exp(log_beta)[enc.item]), 1e-6, 1 - 1e-6)
        wrong = np.log((1.0 - s) / k_minus_1)
        log_t = np.tile(np.log(priors), (n_items, 1))
        np.add.at(log_t, enc.item, wrong[:, None])
        np.add.at(log_t, (enc.item, enc.label), np.log(s) - wrong)
        new_t = _normalise_log(log_t)
        delta = float(np.abs(new_t - t).max())
        t = new_t
        if delta < tol:
            break
    return GladResult(
        posteriors=_posteriors(enc.items, enc.classes, t),
        ability={w: float(a) for w, a in zip(enc.workers, alpha, strict=True)},
        difficulty={i: float(b) for i, b in zip(enc.items, np.exp(log_beta), strict=True)},
        worker_accuracy=_expected_accuracy(enc, t),
        iterations=iterations,
    )


def mace(
    votes: Sequence[Vote], *, max_iter: int = 100, tol: float = 1e-6, smoothing: float = 0.5
) -> MaceResult:
    """MACE by EM: worker w answers the truth with probability c_w, else draws from a strategy ξ_w.

    ``smoothing`` is added to the expected counts of the competence Beta and the strategy Dirichlet
    (Hovy et al. use variational Bayes with such priors; EM with pseudo-counts is its point-estimate
    analogue).
    """
    enc = _encode(votes)
    n_items, n_workers, n_classes = enc.shape
    counts = _vote_counts(enc)
    t = counts / counts.sum(axis=1, keepdims=True)
    n_votes = np.bincount(enc.worker, minlength=n_workers).astype(np.float64)
    competence: Array = np.full(n_workers, 0.5)
    strategy = np.full((n_workers, n_classes), 1.0 / n_classes)
    priors = np.full(n_classes, 1.0 / n_classes)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        if iterations > 1:
            # P(knowing | vote, truth = vote) for the votes that match the truth.
            c_v = competence[enc.worker]
            knowing = t[enc.item, enc.label] * c_v / (c_v + (1.0 - c_v) * strategy[enc.worker, enc.label])
        else:
            knowing = t[enc.item, enc.label] * 0.5
        spam = 1.0 - knowing
        competence = (np.bincount(enc.worker, knowing, n_workers) + smoothing) / (n_votes + 2 * smoothing)
        strategy = np.full((n_workers, n_classes), smoothing)
        np.add.at(strategy, (enc.worker, enc.label), spam)
        strategy /= strategy.sum(axis=1, keepdims=True)
        priors = (t.sum(axis=0) + smoothing) / (n_items + smoothing * n_classes)
        c_v = competence[enc.worker]
        spam_term = (1.0 - c_v) * strategy[enc.worker, enc.label]
        log_t = np.tile(np.log(priors), (n_items, 1))
        np.add.at(log_t, enc.item, np.log(spam_term)[:, None])
        np.add.at(log_t, (enc.item, enc.label), np.log(spam_term + c_v) - np.log(spam_term))
        new_t = _normalise_log(log_t)
        delta = float(np.abs(new_t - t).max())
        t = new_t
        if delta < tol:
            break
    return MaceResult(
        posteriors=_posteriors(enc.items, enc.classes, t),
        competence={w: float(c) for w, c in zip(enc.workers, competence, strict=True)},
        strategy={
            w: {c: float(p) for c, p in zip(enc.classes, row, strict=True)}
            for w, row in zip(enc.workers, strategy, strict=True)
        },
        worker_accuracy=_expected_accuracy(enc, t),
        iterations=iterations,
    )


def item_posterior(
    item_votes: Sequence[tuple[str, str]],
    *,
    worker_accuracy: Mapping[str, float],
    classes: Sequence[str],
    prior: Mapping[str, float] | None = None,
    default_accuracy: float = 0.7,
) -> Posterior:
    """Online one-coin posterior of one item from its (worker, label) votes and known reliabilities.

    Accuracies are clamped to [1/K + 0.001, 0.99]: one worker never gives certainty and a poor
    estimate never turns a vote into evidence against its own label. Workers missing from
    ``worker_accuracy`` count with ``default_accuracy``. A label outside ``classes`` (e.g. an
    unfiltered "not sure") raises ``ValueError``.
    """
    ordered = sorted(set(classes))
    if not ordered:
        raise ValueError("classes is empty")
    index = {name: i for i, name in enumerate(ordered)}
    k = len(ordered)
    if prior is None:
        log_p = np.full(k, -np.log(k))
    else:
        weights = np.array([float(prior.get(c, 0.0)) for c in ordered])
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("prior must be non-negative with a positive total")
        with np.errstate(divide="ignore"):
            log_p = np.log(weights / weights.sum())
    if k > 1:
        for worker, label in item_votes:
            if label not in index:
                raise ValueError(f"label {label!r} is not one of the classes")
            p = min(max(float(worker_accuracy.get(worker, default_accuracy)), 1.0 / k + _EPS), _MAX_ACCURACY)
            step = np.full(k, np.log((1.0 - p) / (k - 1)))
            step[index[label]] = np.log(p)
            log_p = log_p + step
    else:
        for _, label in item_votes:
            if label not in index:
                raise ValueError(f"label {label!r} is not one of the classes")
    t = _normalise_log(log_p[None, :])
    return _posteriors(["_"], ordered, t)["_"]
