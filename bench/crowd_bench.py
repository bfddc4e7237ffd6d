"""Crowd aggregation on a simulated crowd (issue "Quality assurance and the workforce marketplace").

Classes: scikit-learn's bundled digits (1,797 8x8 images, 10 classes) are the items and their
digit the truth. Boxes: generated scenes in a 640x480 frame, 1-6 boxes each, sides uniform in
[20, 200] px. A pool of 40 workers; every item (scene) gets k workers drawn at random from the
pool (the first k of a per-item permutation, so k = 5 extends k = 3). Each worker's answer to each
item is drawn once per seed, so all methods see the same votes. 5% of the items (scenes) are gold:
only methods marked "gold" use their truth, and all accuracies are measured on the other 95%.

Worker behaviour (fixed before the first run, not tuned):

| kind | share | classes | boxes |
|---|---|---|---|
| spammer | 0 / 10 / 30 / 45% of the pool | uniform random label | 1 + Poisson(2) random boxes anywhere |
| adversarial | 2 workers | a fixed wrong mapping c → (c + s) mod 10, s random per worker | every box offset by 0.7 w and 0.7 h (IoU ≈ 0.05) |
| biased | 4 workers | always 7 for a 1 and 9 for a 4, otherwise 90% right | right x shifted by +0.15 w, sides x 1.2, jitter 3% |
| accurate | half the rest | right with p ~ U(0.90, 0.95) | each box drawn with p = 0.97, edge jitter N(0, 3% of the side) |
| noisy | other half | right with p ~ U(0.60, 0.75) | p = 0.85, jitter 10%, + Poisson(0.3) random extra boxes |

Wrong answers of accurate and noisy workers are realistic digit confusions: half the time drawn
from a weak classifier's probabilities for that very image (logistic regression on 100 random
digits, truth removed), half the time uniform over the 9 wrong digits.

Classes: majority vote (MV), Dawid-Skene, GLAD, MACE, one-coin without gold and the service
default = one-coin with the 5% gold clamped. Boxes (mean IoU per true box, Hungarian-matched,
missing = 0; recall = share of true boxes matched at IoU >= 0.5; precision = share of fused boxes
matched at IoU >= 0.5): plain averaging (``average_boxes``) and ``fuse_boxes`` with weights from
``worker_box_quality`` (consensus-only, or with the 5% gold scenes as reference), weighted mean and
weighted median.

Exits with 1 unless, at 30% spammers and both k = 3 and k = 5, Dawid-Skene and the default beat MV
in accuracy and the default weighted fusion (median, gold weights) beats plain averaging in mean IoU and in recall.

Run: ``.venv/bin/python bench/crowd_bench.py [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from annocloud_server.crowd.classes import Posterior, dawid_skene, glad, mace, majority_vote, one_coin
from annocloud_server.crowd.geometry import Box, FusedBox, average_boxes, fuse_boxes, iou, worker_box_quality
from numpy.typing import NDArray
from readme_section import Tee, write_section
from scipy.optimize import linear_sum_assignment
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

BEGIN, END = "<!-- crowd-bench:begin -->", "<!-- crowd-bench:end -->"

POOL = 40
N_CLASSES = 10
SPAM_SHARES = (0.0, 0.1, 0.3, 0.45)
KS = (3, 5)
GOLD_SHARE = 0.05
FRAME = (640.0, 480.0)
ADVERSARIAL, BIASED = 2, 4

Intp = NDArray[np.intp]


def pool_kinds(spam_share: float, rng: np.random.Generator) -> list[str]:
    n_spam = round(spam_share * POOL)
    rest = POOL - n_spam - ADVERSARIAL - BIASED
    kinds = (
        ["spammer"] * n_spam
        + ["adversarial"] * ADVERSARIAL
        + ["biased"] * BIASED
        + ["accurate"] * (rest - rest // 2)
        + ["noisy"] * (rest // 2)
    )
    return [kinds[i] for i in rng.permutation(POOL)]


# --- classes -------------------------------------------------------------------------------------


def confusion_source(x: NDArray[np.float64], y: Intp, rng: np.random.Generator) -> NDArray[np.float64]:
    """Per image, a distribution over wrong digits: half a weak classifier's, half uniform."""
    train = rng.choice(len(y), 100, replace=False)
    clf = LogisticRegression(max_iter=500).fit(x[train], y[train])
    proba = clf.predict_proba(x)
    proba[np.arange(len(y)), y] = 0.0
    proba /= np.maximum(proba.sum(axis=1, keepdims=True), 1e-12)
    uniform = np.full_like(proba, 1.0 / (N_CLASSES - 1))
    uniform[np.arange(len(y)), y] = 0.0
    return np.asarray(0.5 * proba + 0.5 * uniform, dtype=np.float64)


def class_answers(
    y: Intp, wrong: NDArray[np.float64], kinds: Sequence[str], rng: np.random.Generator
) -> Intp:
    """answers[item, worker] for the whole pool."""
    n = len(y)
    answers = np.empty((n, len(kinds)), dtype=np.intp)
    cum = np.cumsum(wrong, axis=1)
    for w, kind in enumerate(kinds):
        if kind == "spammer":
            answers[:, w] = rng.integers(0, N_CLASSES, n)
            continue
        if kind == "adversarial":
            answers[:, w] = (y + rng.integers(1, N_CLASSES)) % N_CLASSES
            continue
        p = {"accurate": rng.uniform(0.90, 0.95), "noisy": rng.uniform(0.60, 0.75), "biased": 0.90}[kind]
        errors = np.minimum((cum < rng.random(n)[:, None]).sum(axis=1), N_CLASSES - 1)
        answers[:, w] = np.where(rng.random(n) < p, y, errors)
        if kind == "biased":
            answers[y == 1, w] = 7
            answers[y == 4, w] = 9
    return answers


def class_methods(
    gold: dict[str, str],
) -> dict[str, Callable[[list[tuple[str, str, str]]], dict[str, Posterior]]]:
    return {
        "majority vote": majority_vote,
        "Dawid-Skene": lambda v: dawid_skene(v).posteriors,
        "GLAD": lambda v: glad(v).posteriors,
        "MACE": lambda v: mace(v).posteriors,
        "one-coin (no gold)": lambda v: one_coin(v).posteriors,
        "default: one-coin + 5% gold": lambda v: one_coin(v, gold=gold).posteriors,
    }


def run_classes(y: Intp, answers: Intp, order: Intp, gold_items: set[int], k: int) -> dict[str, float]:
    votes = [(f"i{i}", f"w{w}", str(answers[i, w])) for i in range(len(y)) for w in order[i, :k]]
    gold = {f"i{i}": str(y[i]) for i in gold_items}
    scored = [i for i in range(len(y)) if i not in gold_items]
    result: dict[str, float] = {}
    for name, method in class_methods(gold).items():
        posteriors = method(votes)
        result[name] = float(np.mean([posteriors[f"i{i}"].label == str(y[i]) for i in scored]))
    return result


# --- boxes ---------------------------------------------------------------------------------------


def scene(rng: np.random.Generator) -> list[Box]:
    boxes = []
    for _ in range(int(rng.integers(1, 7))):
        w, h = rng.uniform(20, 200, 2)
        boxes.append(
            (float(rng.uniform(0, FRAME[0] - w)), float(rng.uniform(0, FRAME[1] - h)), float(w), float(h))
        )
    return boxes


def random_box(rng: np.random.Generator) -> Box:
    w, h = rng.uniform(20, 200, 2)
    return (float(rng.uniform(0, FRAME[0] - w)), float(rng.uniform(0, FRAME[1] - h)), float(w), float(h))


def jitter(box: Box, sd: float, rng: np.random.Generator) -> Box:
    x, y, w, h = box
    x0, y0, x1, y1 = (
        x + rng.normal(0, sd * w),
        y + rng.normal(0, sd * h),
        x + w + rng.normal(0, sd * w),
        y + h + rng.normal(0, sd * h),
    )
    x0, x1 = min(x0, x1 - 1), max(x1, x0 + 1)
    y0, y1 = min(y0, y1 - 1), max(y1, y0 + 1)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def draw(kind: str, truth: list[Box], rng: np.random.Generator) -> list[Box]:
    if kind == "spammer":
        return [random_box(rng) for _ in range(1 + int(rng.poisson(2)))]
    if kind == "adversarial":
        return [(x + 0.7 * w, y + 0.7 * h, w, h) for x, y, w, h in truth]
    if kind == "biased":
        out = []
        for x, y, w, h in truth:
            if rng.random() < 0.95:
                cx, cy = x + w / 2 + 0.15 * w, y + h / 2
                out.append(jitter((cx - 0.6 * w, cy - 0.6 * h, 1.2 * w, 1.2 * h), 0.03, rng))
        return out
    recall, sd, extra = {"accurate": (0.97, 0.03, 0.0), "noisy": (0.85, 0.10, 0.3)}[kind]
    out = [jitter(b, sd, rng) for b in truth if rng.random() < recall]
    return out + [random_box(rng) for _ in range(int(rng.poisson(extra)))]


def match(truth: Sequence[Box], fused: Sequence[Box]) -> tuple[list[float], int]:
    """Matched IoU per true box (0 if unmatched) and the number of fused boxes matched at >= 0.5."""
    if not truth or not fused:
        return [0.0] * len(truth), 0
    overlaps = np.array([[iou(t, f) for f in fused] for t in truth])
    rows, cols = linear_sum_assignment(-overlaps)
    per_true = [0.0] * len(truth)
    for r, c in zip(rows, cols, strict=True):
        per_true[r] = float(overlaps[r, c])
    return per_true, int(sum(overlaps[r, c] >= 0.5 for r, c in zip(rows, cols, strict=True)))


@dataclass
class BoxScore:
    mean_iou: float
    recall: float
    precision: float


def score_boxes(
    truths: Sequence[list[Box]], fused: Sequence[list[FusedBox]], scored: Sequence[int]
) -> BoxScore:
    ious: list[float] = []
    hits = n_fused = 0
    for s in scored:
        per_true, hit = match(truths[s], [f.box for f in fused[s]])
        ious.extend(per_true)
        hits += hit
        n_fused += len(fused[s])
    return BoxScore(
        float(np.mean(ious)), float(np.mean([v >= 0.5 for v in ious])), hits / n_fused if n_fused else 0.0
    )


def run_boxes(
    truths: list[list[Box]], drawn: list[list[list[Box]]], order: Intp, gold_scenes: set[int], k: int
) -> dict[str, BoxScore]:
    items = {f"s{s}": [(f"w{w}", drawn[s][w]) for w in order[s, :k]] for s in range(len(truths))}
    keys = list(items)
    scored = [s for s in range(len(truths)) if s not in gold_scenes]
    gold = {f"s{s}": truths[s] for s in gold_scenes}
    consensus_q = worker_box_quality(items)
    gold_q = worker_box_quality(items, gold=gold)
    arms: dict[str, Callable[[str], list[FusedBox]]] = {
        "plain averaging": lambda key: average_boxes(items[key]),
        "weighted mean, consensus weights": lambda key: fuse_boxes(
            items[key], weights=consensus_q, center="mean"
        ),
        "weighted median, consensus weights": lambda key: fuse_boxes(
            items[key], weights=consensus_q, center="median"
        ),
        "weighted mean, 5% gold weights": lambda key: fuse_boxes(items[key], weights=gold_q, center="mean"),
        "default: weighted median, 5% gold weights": lambda key: fuse_boxes(items[key], weights=gold_q),
    }
    return {name: score_boxes(truths, [fuse(key) for key in keys], scored) for name, fuse in arms.items()}


# --- driver --------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1%} ± {sd:.1%}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scenes", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 600 digits, 100 scenes")
    parser.add_argument("--json", metavar="PATH", help="write the per-seed figures here")
    args = parser.parse_args()
    seeds = list(range(2 if args.quick else args.seeds))
    n_scenes = 100 if args.quick else args.scenes
    digits = load_digits()
    x_all = np.asarray(digits.data, dtype=np.float64) / 16.0
    y_all = np.asarray(digits.target, dtype=np.intp)
    started = time.perf_counter()
    # figures[family][spam][k][method] = per-seed values
    classes: dict[float, dict[int, dict[str, list[float]]]] = {}
    boxes: dict[float, dict[int, dict[str, dict[str, list[float]]]]] = {}
    for spam in SPAM_SHARES:
        for seed in seeds:
            rng = np.random.default_rng([seed, round(spam * 100)])
            keep = rng.permutation(len(y_all))[: 600 if args.quick else len(y_all)]
            x, y = x_all[keep], y_all[keep]
            kinds = pool_kinds(spam, rng)
            answers = class_answers(y, confusion_source(x, y, rng), kinds, rng)
            order = np.argsort(rng.random((len(y), POOL)), axis=1)
            gold_items = {int(i) for i in rng.choice(len(y), round(GOLD_SHARE * len(y)), replace=False)}
            truths = [scene(rng) for _ in range(n_scenes)]
            drawn = [[draw(kind, t, rng) for kind in kinds] for t in truths]
            scene_order = np.argsort(rng.random((n_scenes, POOL)), axis=1)
            gold_scenes = {
                int(i) for i in rng.choice(n_scenes, max(1, round(GOLD_SHARE * n_scenes)), replace=False)
            }
            for k in KS:
                for name, acc in run_classes(y, answers, order, gold_items, k).items():
                    classes.setdefault(spam, {}).setdefault(k, {}).setdefault(name, []).append(acc)
                for name, score in run_boxes(truths, drawn, scene_order, gold_scenes, k).items():
                    cell = boxes.setdefault(spam, {}).setdefault(k, {}).setdefault(name, {})
                    for metric, value in vars(score).items():
                        cell.setdefault(metric, []).append(value)
            print(
                f"spam {spam:.0%} seed {seed} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr
            )
    elapsed = time.perf_counter() - started

    command = ".venv/bin/python bench/crowd_bench.py" + (" --quick" if args.quick else "")
    tee = Tee().start()
    print("## Crowd simulation: aggregation under spammers (issue #5)\n")
    print(
        f"Command: `{command}`, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}, {elapsed:.0f} s; seeds {seeds}, {len(y)} digits, {n_scenes} scenes, "
        f"pool {POOL}, gold {GOLD_SHARE:.0%}. Mean ± std over seeds, measured on the non-gold items.\n"
    )
    cols = [(s, k) for s in SPAM_SHARES for k in KS]
    header = "| | " + " | ".join(f"{s:.0%} spam, k={k}" for s, k in cols) + " |"
    rule = "|---|" + "---|" * len(cols)
    print("Class accuracy (digits):\n")
    print(header)
    print(rule)
    for name in classes[SPAM_SHARES[0]][KS[0]]:
        print(f"| {name} | " + " | ".join(mean_std(classes[s][k][name]) for s, k in cols) + " |")
    for metric, title in (
        ("mean_iou", "mean IoU per true box"),
        ("recall", "recall at IoU 0.5"),
        ("precision", "precision at IoU 0.5"),
    ):
        print(f"\nBoxes, {title}:\n")
        print(header)
        print(rule)
        for name in boxes[SPAM_SHARES[0]][KS[0]]:
            print(f"| {name} | " + " | ".join(mean_std(boxes[s][k][name][metric]) for s, k in cols) + " |")

    def mean(values: list[float]) -> float:
        return statistics.mean(values)

    failures = []
    for k in KS:
        c = classes[0.3][k]
        for name in ("Dawid-Skene", "default: one-coin + 5% gold"):
            if mean(c[name]) <= mean(c["majority vote"]):
                failures.append(f"k={k}: {name} does not beat majority vote")
        b = boxes[0.3][k]
        for metric in ("mean_iou", "recall"):
            if mean(b["default: weighted median, 5% gold weights"][metric]) <= mean(
                b["plain averaging"][metric]
            ):
                failures.append(f"k={k}: weighted fusion does not beat plain averaging in {metric}")
    print(
        "\nCheck at 30% spammers (k = 3 and 5): "
        + ("PASS" if not failures else "FAIL: " + "; ".join(failures))
    )
    report = tee.stop()
    if not args.quick:
        write_section(f"{BEGIN}\n{report.rstrip()}\n{END}", begin=BEGIN, end=END)
    if args.json:
        payload = {
            "command": command,
            "seconds": elapsed,
            "seeds": seeds,
            "classes": {f"{s}": {f"{k}": v for k, v in by_k.items()} for s, by_k in classes.items()},
            "boxes": {f"{s}": {f"{k}": v for k, v in by_k.items()} for s, by_k in boxes.items()},
            "failures": failures,
        }
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
