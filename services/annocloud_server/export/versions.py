"""Pure dataset-version logic: split fractions, split counts per class, primary class, split keys.

A split is stratified by each item's primary class: every class is divided on its own with the
largest-remainder method (so each split of each class is within one item of its exact share), and
inside a class the items are ordered by ``sha256("{seed}:{item}")``, so the same items and seed
always give the same split.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass

from annocloud.annotations.v1 import annotations_pb2
from annocloud.export.v1 import export_pb2

from annocloud_server.common.errors import InvalidArgument

SPLIT_ORDER = (export_pb2.SPLIT_TRAIN, export_pb2.SPLIT_VALIDATION, export_pb2.SPLIT_TEST)
SPLIT_NAMES: dict[int, str] = {
    export_pb2.SPLIT_TRAIN: "train",
    export_pb2.SPLIT_VALIDATION: "val",
    export_pb2.SPLIT_TEST: "test",
}
"""The name of each split inside artifacts (file names, columns, fields)."""

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
_TOLERANCE = 1e-6
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SplitFractions:
    train: float
    validation: float
    test: float
    seed: int = 0

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.train, self.validation, self.test)


def split_fractions(train: float, validation: float, test: float, seed: int) -> SplitFractions:
    """Validated fractions; all three zero means the default 0.8 / 0.1 / 0.1."""
    values = (train, validation, test)
    if values == (0.0, 0.0, 0.0):
        values = DEFAULT_FRACTIONS
    if any(not math.isfinite(v) or v < 0 or v > 1 for v in values):
        raise InvalidArgument("split fractions must be finite and in [0, 1]", reason="BAD_SPLIT")
    if abs(sum(values) - 1.0) > _TOLERANCE:
        raise InvalidArgument(f"split fractions must sum to 1, not {sum(values)}", reason="BAD_SPLIT")
    if not -MAX_SEED <= seed <= MAX_SEED:
        raise InvalidArgument("split seed out of range", reason="BAD_SPLIT")
    return SplitFractions(*values, seed=seed)


def split_counts(count: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many of ``count`` items go to train, validation, test (largest remainder, ties in that order)."""
    exact = [count * f for f in fractions]
    counts = [math.floor(e) for e in exact]
    missing = count - sum(counts)
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:missing]:
        counts[i] += 1
    return counts[0], counts[1], counts[2]


def split_key(seed: int, item: str) -> str:
    """The order of an item inside its class for a given seed."""
    return hashlib.sha256(f"{seed}:{item}".encode()).hexdigest()


def primary_class(labels: annotations_pb2.Labels) -> str:
    """The class an item is stratified by: its first classification class, else the most frequent
    region label (the earliest on a tie), else "" (items without labels form a stratum of their own)."""
    if labels.classes:
        return str(labels.classes[0])
    counts = Counter(r.label for r in labels.regions if r.label)
    if not counts:
        return ""
    best = max(counts.values())
    return next(r.label for r in labels.regions if counts.get(r.label) == best)


def labels_digest(labels: annotations_pb2.Labels) -> str:
    """What a diff compares: two versions of an item differ when their labels differ."""
    return hashlib.sha256(labels.SerializeToString(deterministic=True)).hexdigest()
