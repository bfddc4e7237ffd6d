"""Inter-annotator agreement: Cohen's kappa, Fleiss' kappa and Krippendorff's alpha."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two raters over the same items (1.0 when both always give one same label)."""
    if len(a) != len(b) or not a:
        raise ValueError("cohen_kappa needs two non-empty sequences of equal length")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[label] * cb[label] for label in ca) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> float:
    """Fleiss' kappa; each inner sequence is the labels one item received (at least 2 each).

    Items may have different numbers of ratings: per-item agreement is computed over that item's
    rating pairs and category shares are pooled over all ratings, which is Fleiss (1971) exactly
    when every item has the same count.
    """
    if not ratings:
        raise ValueError("fleiss_kappa needs at least one item")
    if any(len(r) < 2 for r in ratings):
        raise ValueError("every item needs at least two ratings")
    pooled: Counter[str] = Counter()
    per_item: list[float] = []
    for labels in ratings:
        counts = Counter(labels)
        pooled.update(counts)
        m = len(labels)
        per_item.append(sum(c * (c - 1) for c in counts.values()) / (m * (m - 1)))
    total = sum(pooled.values())
    p_bar = sum(per_item) / len(per_item)
    p_e = sum((c / total) ** 2 for c in pooled.values())
    if p_e >= 1.0:
        return 1.0
    return (p_bar - p_e) / (1.0 - p_e)


def krippendorff_alpha(
    units: Sequence[Sequence[str | float | None]], *, level: Literal["nominal", "interval"] = "nominal"
) -> float:
    """Krippendorff's alpha; each inner sequence is one unit's values by coder, None = not coded.

    Units with fewer than two values are not pairable and are ignored. ``interval`` reads the
    values as numbers and uses the squared difference.
    """
    interval = level == "interval"
    pairable: list[list[str | float]] = [
        [float(v) if interval else str(v) for v in unit if v is not None] for unit in units
    ]
    pairable = [u for u in pairable if len(u) >= 2]
    if not pairable:
        raise ValueError("no unit has two or more values")
    index = {v: i for i, v in enumerate(dict.fromkeys(v for u in pairable for v in u))}
    coincidence = np.zeros((len(index), len(index)))
    for unit in pairable:
        counts = np.zeros(len(index))
        for v in unit:
            counts[index[v]] += 1
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (len(unit) - 1)
    n_c = coincidence.sum(axis=1)
    n = float(n_c.sum())
    if interval:
        points = np.array(list(index), dtype=np.float64)
        delta = (points[:, None] - points[None, :]) ** 2
    else:
        delta = 1.0 - np.eye(len(index))
    observed = float((coincidence * delta).sum())
    expected = float((np.outer(n_c, n_c) * delta).sum()) / (n - 1)
    if expected == 0:
        return 1.0
    return 1.0 - observed / expected
