"""Labels per item with dynamic overlap vs fixed overlap, on the digits crowd of crowd_bench.py.

Same items, pool, worker behaviour and pre-drawn answers as bench/crowd_bench.py (10% and 30%
spammers). Items arrive in a random order; each item asks the workers of its own random
permutation one at a time. 5% of the items are gold; accuracy and labels/item are measured on the
other 95% (gold items get the same treatment and cost the same in every policy, so they are left
out of both figures).

- Dynamic: after each label, ``classes.item_posterior`` (one-coin likelihood, uniform prior) with
  the current worker accuracies, then ``overlap.next_step`` with min 2 / max 7 labels and a sweep
  of thresholds. Accuracies are learned online: before the first refit, ``quality.beta_accuracy``
  of each worker's gold answers so far (prior (2, 1)); every 100 items, ``classes.one_coin`` on all
  votes so far with the gold clamped. An item that reaches 7 labels unconfident goes to REVIEW; it
  keeps the posterior's label in the accuracy figure (no expert is simulated) and the share of
  such items is reported.
- Fixed: the first k workers of every item, k = 1..7, aggregated offline with majority vote and
  with the default (one-coin + 5% gold) over the whole set.

"Fixed k at the same accuracy" interpolates each fixed curve (mean over seeds) linearly in k to
the dynamic policy's mean accuracy; the saving is 1 - dynamic labels / that k.

Run: ``.venv/bin/python bench/overlap_bench.py [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence

import crowd_bench as cb
import numpy as np
from annocloud_server.crowd.classes import item_posterior, majority_vote, one_coin
from annocloud_server.crowd.overlap import OverlapPolicy, Step, next_step
from annocloud_server.crowd.quality import beta_accuracy
from numpy.typing import NDArray
from readme_section import Tee, write_section
from sklearn.datasets import load_digits

BEGIN, END = "<!-- overlap-bench:begin -->", "<!-- overlap-bench:end -->"

SPAM_SHARES = (0.1, 0.3)
THRESHOLDS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
MIN_LABELS, MAX_LABELS = 2, 7
FIXED_KS = tuple(range(1, 8))
REFIT_EVERY = 100
CLASSES = [str(c) for c in range(cb.N_CLASSES)]

Intp = NDArray[np.intp]


def dynamic(
    y: Intp, answers: Intp, order: Intp, stream: Intp, gold_items: set[int], threshold: float
) -> tuple[float, float, float]:
    """(accuracy, labels per item, review share) on the non-gold items."""
    policy = OverlapPolicy(MIN_LABELS, MAX_LABELS, threshold)
    gold = {f"i{i}": str(y[i]) for i in gold_items}
    votes: list[tuple[str, str, str]] = []
    gold_right: dict[str, int] = {}
    gold_seen: dict[str, int] = {}
    fitted: dict[str, float] | None = None
    correct = spent = reviewed = scored = 0
    for position, i in enumerate(stream):
        if position and position % REFIT_EVERY == 0:
            fitted = one_coin(votes, gold=gold).worker_accuracy
        accuracy = fitted or {w: beta_accuracy(gold_right.get(w, 0), n) for w, n in gold_seen.items()}
        item_votes: list[tuple[str, str]] = []
        step = Step.ASK_MORE
        while step is Step.ASK_MORE:
            worker = f"w{order[i, len(item_votes)]}"
            label = str(answers[i, order[i, len(item_votes)]])
            item_votes.append((worker, label))
            votes.append((f"i{i}", worker, label))
            if i in gold_items:
                gold_seen[worker] = gold_seen.get(worker, 0) + 1
                gold_right[worker] = gold_right.get(worker, 0) + (label == str(y[i]))
            posterior = item_posterior(item_votes, worker_accuracy=accuracy, classes=CLASSES)
            step = next_step(posterior, len(item_votes), policy)
        if i in gold_items:
            continue
        scored += 1
        spent += len(item_votes)
        reviewed += step is Step.REVIEW
        correct += posterior.label == str(y[i])
    return correct / scored, spent / scored, reviewed / scored


def fixed(y: Intp, answers: Intp, order: Intp, gold_items: set[int], k: int) -> tuple[float, float]:
    """(majority-vote accuracy, one-coin + gold accuracy) with the first k workers of every item."""
    votes = [(f"i{i}", f"w{w}", str(answers[i, w])) for i in range(len(y)) for w in order[i, :k]]
    gold = {f"i{i}": str(y[i]) for i in gold_items}
    scored = [i for i in range(len(y)) if i not in gold_items]
    mv = majority_vote(votes)
    oc = one_coin(votes, gold=gold).posteriors
    return (
        float(np.mean([mv[f"i{i}"].label == str(y[i]) for i in scored])),
        float(np.mean([oc[f"i{i}"].label == str(y[i]) for i in scored])),
    )


def matched_k(curve: Sequence[float], target: float) -> float | None:
    """The fractional k at which the fixed curve (k = 1, 2, ...) first reaches ``target``."""
    for j, acc in enumerate(curve):
        if acc >= target:
            if j == 0:
                return 1.0
            lo = curve[j - 1]
            return j + (target - lo) / (acc - lo)
    return None


def mean_std(values: Sequence[float], fmt: str = "{:.1%}") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 600 digits")
    parser.add_argument("--json", metavar="PATH", help="write the per-seed figures here")
    args = parser.parse_args()
    seeds = list(range(2 if args.quick else args.seeds))
    digits = load_digits()
    x_all = np.asarray(digits.data, dtype=np.float64) / 16.0
    y_all = np.asarray(digits.target, dtype=np.intp)
    started = time.perf_counter()
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for spam in SPAM_SHARES:
        res = results.setdefault(f"{spam}", {})
        for seed in seeds:
            # The same stream of random draws as crowd_bench.py for this seed and spammer share.
            rng = np.random.default_rng([seed, round(spam * 100)])
            keep = rng.permutation(len(y_all))[: 600 if args.quick else len(y_all)]
            x, y = x_all[keep], y_all[keep]
            kinds = cb.pool_kinds(spam, rng)
            answers = cb.class_answers(y, cb.confusion_source(x, y, rng), kinds, rng)
            order = np.argsort(rng.random((len(y), cb.POOL)), axis=1)
            gold_items = {int(i) for i in rng.choice(len(y), round(cb.GOLD_SHARE * len(y)), replace=False)}
            stream = np.random.default_rng([seed, 7]).permutation(len(y))
            for k in FIXED_KS:
                mv, oc = fixed(y, answers, order, gold_items, k)
                res.setdefault(f"fixed k={k}", {}).setdefault("mv", []).append(mv)
                res[f"fixed k={k}"].setdefault("one_coin", []).append(oc)
            for t in THRESHOLDS:
                acc, labels, review = dynamic(y, answers, order, stream, gold_items, t)
                cell = res.setdefault(f"dynamic {t}", {})
                for key, value in (("accuracy", acc), ("labels", labels), ("review", review)):
                    cell.setdefault(key, []).append(value)
            print(
                f"spam {spam:.0%} seed {seed} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr
            )
    elapsed = time.perf_counter() - started

    command = ".venv/bin/python bench/overlap_bench.py" + (" --quick" if args.quick else "")
    tee = Tee().start()
    print("## Dynamic vs fixed overlap: labels per item at the same accuracy (issue #5)\n")
    print(
        f"Command: `{command}`, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}, {elapsed:.0f} s; seeds {seeds}, {len(y)} digits, pool {cb.POOL}, "
        f"gold {cb.GOLD_SHARE:.0%}, dynamic min {MIN_LABELS} / max {MAX_LABELS}. Mean ± std over seeds.\n"
    )
    matched: dict[str, dict[str, dict[str, float | None]]] = {}
    for spam in SPAM_SHARES:
        res = results[f"{spam}"]
        mv_curve = [statistics.mean(res[f"fixed k={k}"]["mv"]) for k in FIXED_KS]
        oc_curve = [statistics.mean(res[f"fixed k={k}"]["one_coin"]) for k in FIXED_KS]
        print(f"### {spam:.0%} spammers\n")
        print("| fixed k | labels/item | accuracy, majority vote | accuracy, one-coin + gold |")
        print("|---|---|---|---|")
        for k in FIXED_KS:
            cell = res[f"fixed k={k}"]
            print(f"| {k} | {k} | {mean_std(cell['mv'])} | {mean_std(cell['one_coin'])} |")
        print()
        print(
            "| dynamic threshold | accuracy | labels/item | to review | fixed k (MV) at same accuracy |"
            " fixed k (one-coin) at same accuracy | saving vs one-coin fixed |"
        )
        print("|---|---|---|---|---|---|---|")
        for t in THRESHOLDS:
            cell = res[f"dynamic {t}"]
            acc, labels = statistics.mean(cell["accuracy"]), statistics.mean(cell["labels"])
            k_mv, k_oc = matched_k(mv_curve, acc), matched_k(oc_curve, acc)
            matched.setdefault(f"{spam}", {})[f"{t}"] = {"labels": labels, "k_mv": k_mv, "k_one_coin": k_oc}
            saving = f"{1 - labels / k_oc:.0%}" if k_oc else "—"
            print(
                f"| {t} | {mean_std(cell['accuracy'])} | {mean_std(cell['labels'], '{:.2f}')} | "
                f"{mean_std(cell['review'])} | {f'{k_mv:.2f}' if k_mv else '> 7'} | "
                f"{f'{k_oc:.2f}' if k_oc else '> 7'} | {saving} |"
            )
        print()
    report = tee.stop()
    if not args.quick:
        write_section(f"{BEGIN}\n{report.rstrip()}\n{END}", begin=BEGIN, end=END)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "command": command,
                    "seconds": elapsed,
                    "seeds": seeds,
                    "results": results,
                    "matched": matched,
                },
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
