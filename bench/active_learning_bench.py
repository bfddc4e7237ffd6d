"""Active-learning learning curve on scikit-learn's bundled digits (issue #6, Done-when item 2).

Pool-based: per seed, a random 30% test split is held out and the rest is the unlabelled pool. Every
strategy starts from the same 10 randomly chosen labels (or, in the k-center row, 10 items picked by
k-center greedy), the head (``modelassist.heads.fit_head``, L-BFGS, l2 = 1) is retrained after every
batch of 10 new labels, and test accuracy is recorded. Features: the 64 pixel intensities / 16.
Target accuracies are 90% and 95% of the accuracy the same head reaches with the whole pool labelled
(per seed); "labels needed" is the first labelled-set size whose test accuracy reaches the target.

Run: ``.venv/bin/python bench/active_learning_bench.py [--quick]``. Prints the table and rewrites the
active-learning section of bench/README.md with it and the command (not with --quick).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from annocloud_server.modelassist.heads import committee_probabilities, fit_committee, fit_head
from annocloud_server.modelassist.sampling import ColdStart, Strategy, cold_start, rank
from numpy.typing import NDArray
from readme_section import write_section
from sklearn.datasets import load_digits

BEGIN, END = "<!-- active-learning-bench:begin -->", "<!-- active-learning-bench:end -->"
N_CLASSES = 10
TARGET_FRACTIONS = (0.90, 0.95)
CURVE_POINTS = (20, 50, 100, 200, 300)


@dataclass(frozen=True)
class Arm:
    label: str
    strategy: Strategy
    cold: ColdStart = ColdStart.RANDOM


ARMS = (
    Arm("random", Strategy.RANDOM),
    Arm("least confidence", Strategy.LEAST_CONFIDENCE),
    Arm("margin", Strategy.MARGIN),
    Arm("entropy", Strategy.ENTROPY),
    Arm("committee (5 bootstrap heads, vote entropy)", Strategy.COMMITTEE),
    Arm("margin, k-center cold start", Strategy.MARGIN, ColdStart.K_CENTER),
)


@dataclass
class Curve:
    labels: list[int]
    accuracy: list[float]

    def labels_to_reach(self, target: float) -> int | None:
        return next((n for n, acc in zip(self.labels, self.accuracy, strict=True) if acc >= target), None)

    def accuracy_at(self, count: int) -> float:
        return next(acc for n, acc in zip(self.labels, self.accuracy, strict=True) if n >= count)


def split(n: int, seed: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    order = np.random.default_rng(seed).permutation(n)
    test_size = round(0.3 * n)
    return order[test_size:], order[:test_size]


def run_curve(
    arm: Arm,
    x_pool: NDArray[np.float64],
    y_pool: NDArray[np.intp],
    x_test: NDArray[np.float64],
    y_test: NDArray[np.intp],
    *,
    seed: int,
    batch: int,
    stop_at: Callable[[Curve], bool],
) -> Curve:
    labelled = list(cold_start(arm.cold, x_pool, batch, seed=seed))
    curve = Curve([], [])
    while True:
        head = fit_head(x_pool[labelled], y_pool[labelled], N_CLASSES)
        curve.labels.append(len(labelled))
        curve.accuracy.append(float((head.predict(x_test) == y_test).mean()))
        if stop_at(curve) or len(labelled) >= len(y_pool):
            return curve
        unlabelled = np.setdiff1d(np.arange(len(y_pool)), labelled)
        x_unlabelled = x_pool[unlabelled]
        if arm.strategy is Strategy.COMMITTEE:
            committee = fit_committee(
                x_pool[labelled], y_pool[labelled], N_CLASSES, size=5, seed=seed * 1000 + len(labelled)
            )
            order = rank(
                arm.strategy, committee_probabilities=committee_probabilities(committee, x_unlabelled)
            )
        elif arm.strategy is Strategy.RANDOM:
            order = rank(arm.strategy, n_items=len(unlabelled), seed=seed * 1000 + len(labelled))
        else:
            order = rank(arm.strategy, probabilities=head.predict_proba(x_unlabelled))
        labelled.extend(int(i) for i in unlabelled[order[:batch]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 seeds, does not touch README.md")
    args = parser.parse_args()
    seeds = list(range(2 if args.quick else args.seeds))
    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float64) / 16.0
    y = np.asarray(digits.target, dtype=np.intp)
    started = time.perf_counter()
    full_accuracy: list[float] = []
    needed: dict[str, dict[float, list[int | None]]] = {
        a.label: {f: [] for f in TARGET_FRACTIONS} for a in ARMS
    }
    curves: dict[str, list[Curve]] = {a.label: [] for a in ARMS}
    for seed in seeds:
        pool, test = split(len(y), seed)
        full = fit_head(x[pool], y[pool], N_CLASSES)
        ceiling = float((full.predict(x[test]) == y[test]).mean())
        full_accuracy.append(ceiling)
        targets = [f * ceiling for f in TARGET_FRACTIONS]

        def stop_at(curve: Curve, targets: list[float] = targets) -> bool:
            reached = curve.labels_to_reach(max(targets)) is not None
            return reached and curve.labels[-1] >= max(CURVE_POINTS)

        for arm in ARMS:
            curve = run_curve(
                arm, x[pool], y[pool], x[test], y[test], seed=seed, batch=args.batch, stop_at=stop_at
            )
            curves[arm.label].append(curve)
            for fraction, target in zip(TARGET_FRACTIONS, targets, strict=True):
                needed[arm.label][fraction].append(curve.labels_to_reach(target))
            print(
                f"seed {seed} {arm.label}: "
                + ", ".join(f"{f:.0%}→{needed[arm.label][f][-1]}" for f in TARGET_FRACTIONS),
                flush=True,
            )
    elapsed = time.perf_counter() - started
    section = render(args, seeds, len(y), full_accuracy, needed, curves, elapsed)
    print(section)
    if not args.quick:
        write_readme(section)


def mean(values: list[int | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.mean(v for v in values if v is not None)


def _change(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else (value - base) / base


def render(
    args: argparse.Namespace,
    seeds: list[int],
    n_items: int,
    full_accuracy: list[float],
    needed: dict[str, dict[float, list[int | None]]],
    curves: dict[str, list[Curve]],
    elapsed: float,
) -> str:
    command = "`.venv/bin/python bench/active_learning_bench.py`" + (
        f" --seeds {args.seeds}" if args.seeds != 10 else ""
    )
    pool_size = n_items - round(0.3 * n_items)
    head = "| strategy | " + " | ".join(
        f"labels to {f:.0%} target: mean (per seed) | vs random" for f in TARGET_FRACTIONS
    )
    lines = [
        head + " |",
        "|---|" + "---|---|" * len(TARGET_FRACTIONS),
    ]
    random_label = ARMS[0].label
    for arm in ARMS:
        cells = []
        for fraction in TARGET_FRACTIONS:
            values = needed[arm.label][fraction]
            m, base = mean(values), mean(needed[random_label][fraction])
            per_seed = ", ".join("—" if v is None else str(v) for v in values)
            cells.append(f"{'—' if m is None else f'{m:.0f}'} ({per_seed})")
            if arm.label == random_label or m is None or base is None:
                cells.append("—")
            else:
                cells.append(f"{_change(m, base):+.0%}")
        lines.append(f"| {arm.label} | " + " | ".join(cells) + " |")
    curve_head = "| strategy | " + " | ".join(f"{n} labels" for n in CURVE_POINTS) + " |"
    curve_lines = [curve_head, "|---|" + "---|" * len(CURVE_POINTS)]
    for arm in ARMS:
        accs = [statistics.mean(c.accuracy_at(n) for c in curves[arm.label]) for n in CURVE_POINTS]
        curve_lines.append(f"| {arm.label} | " + " | ".join(f"{a:.1%}" for a in accs) + " |")
    verdict = []
    for arm in ARMS[1:]:
        changes = [
            _change(mean(needed[arm.label][f]), mean(needed[random_label][f])) for f in TARGET_FRACTIONS
        ]
        passed = all(c is not None and c <= -0.30 for c in changes)
        verdict.append(f"{arm.label}: {'meets' if passed else 'misses'}")
    ceiling = statistics.mean(full_accuracy)
    targets = ", ".join(f"{f:.0%} → {f * ceiling:.1%}" for f in TARGET_FRACTIONS)
    return f"""{BEGIN}
## Active learning on digits (issue #6)

Command: {command}, on {platform.machine()} with {os.cpu_count()} cores, Python
{platform.python_version()}, {time.strftime("%Y-%m-%d")} ({elapsed:.0f} s).
scikit-learn's bundled digits ({n_items:,} 8x8 images, 10 classes), features = the 64 pixels / 16.
Per seed ({", ".join(map(str, seeds))}): a random 30% test split, the other {pool_size:,} images are the pool;
every strategy starts from the same {args.batch} random labels (k-center row: {args.batch} k-center picks),
takes batches of {args.batch} and retrains the head (`modelassist.heads.fit_head`, L-BFGS, l2 = 1)
after each. The head with the whole pool labelled reaches {ceiling:.1%} test accuracy (mean;
per seed {", ".join(f"{a:.1%}" for a in full_accuracy)}); the targets are fractions of each
seed's own figure (mean targets: {targets}). "Labels needed" = first labelled-set size at or above
the target; "vs random" = change in the mean.

{chr(10).join(lines)}

Issue #6 asks for at least 30% fewer labels than random (here: at both targets):
{"; ".join(verdict)}.

Mean test accuracy along the curve:

{chr(10).join(curve_lines)}
{END}"""


def write_readme(section: str) -> None:
    write_section(section, begin=BEGIN, end=END)


if __name__ == "__main__":
    main()
