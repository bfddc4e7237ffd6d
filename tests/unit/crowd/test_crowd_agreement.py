"""Cohen's kappa, Fleiss' kappa and Krippendorff's alpha against sklearn and textbook values."""

from __future__ import annotations

import numpy as np
import pytest
from annocloud_server.crowd.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha
from sklearn.metrics import cohen_kappa_score

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders x 12 units, "." missing.
KRIPPENDORFF_2011 = [
    "1 2 3 3 2 1 4 1 2 . . .",
    "1 2 3 3 2 2 4 1 2 5 . 3",
    ". 3 3 3 2 3 4 2 2 5 1 .",
    "1 2 3 3 2 4 4 1 2 5 1 .",
]
# Wikipedia's Fleiss' kappa example: 10 items, 14 raters, 5 categories (counts per category).
FLEISS_EXAMPLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def krippendorff_units() -> list[list[str | None]]:
    coders = [row.split() for row in KRIPPENDORFF_2011]
    return [[None if c[u] == "." else c[u] for c in coders] for u in range(12)]


def test_cohen_kappa_matches_sklearn() -> None:
    """On random rater pairs with some agreement, our kappa equals sklearn's cohen_kappa_score."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = [str(v) for v in rng.integers(0, 4, 50)]
        b = [x if rng.random() < 0.6 else str(rng.integers(0, 4)) for x in a]
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_cohen_kappa_edge_cases() -> None:
    """Identical constant raters give 1, and mismatched lengths are refused."""
    assert cohen_kappa(["a", "a"], ["a", "a"]) == 1.0
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="equal length"):
        cohen_kappa(["a"], ["a", "b"])


def test_fleiss_kappa_textbook_example() -> None:
    """The 10 x 14 example gives kappa = 0.210."""
    ratings = [[str(j) for j, count in enumerate(row) for _ in range(count)] for row in FLEISS_EXAMPLE]
    assert fleiss_kappa(ratings) == pytest.approx(0.2099, abs=1e-4)


def test_fleiss_kappa_unequal_counts_and_two_raters() -> None:
    """Perfect agreement with different counts per item is 1; with 2 raters it is Scott's pi."""
    assert fleiss_kappa([["a", "a", "a"], ["b", "b"]]) == pytest.approx(1.0)
    a, b = ["x", "x", "y", "y", "x"], ["x", "y", "y", "y", "x"]
    pooled = {c: (a + b).count(c) / 10 for c in "xy"}
    expected = sum(p * p for p in pooled.values())
    observed = sum(u == v for u, v in zip(a, b, strict=True)) / 5
    assert fleiss_kappa(list(zip(a, b, strict=True))) == pytest.approx((observed - expected) / (1 - expected))
    with pytest.raises(ValueError, match="two ratings"):
        fleiss_kappa([["a"]])


def test_krippendorff_alpha_paper_values() -> None:
    """Krippendorff's 2011 example: nominal alpha = 0.743, interval alpha = 0.849."""
    units = krippendorff_units()
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, level="interval") == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_alpha_matches_reference_package() -> None:
    """On random data with missing values we agree with the krippendorff package (a dev dependency)."""
    import krippendorff

    rng = np.random.default_rng(1)
    data = rng.integers(0, 4, (5, 30)).astype(float)
    data[rng.random(data.shape) < 0.2] = np.nan
    units = [[None if np.isnan(v) else str(int(v)) for v in data[:, u]] for u in range(30)]
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert krippendorff_alpha(units) == pytest.approx(expected)


def test_krippendorff_alpha_needs_pairable_units() -> None:
    """Units with a single value are ignored; no pairable unit at all is a ValueError."""
    with pytest.raises(ValueError, match="two or more"):
        krippendorff_alpha([["a", None], [None, "b"]])
