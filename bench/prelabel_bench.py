"""Simulated annotator effort with and without plate pre-labels from Triton (issue #6).

Scenes come from ``bench/plate_scenes.py`` (seeded photos or noise with 0-3 rendered Russian-style
plates, known boxes). ``plate_detector`` (the Haar cascade) runs on a real tritonserver that the bench
starts itself (``triton_bench.local_triton``: free loopback ports, stopped at the end).

The simulated annotator, per scene:
  without pre-labels  draws every plate box
  with pre-labels     matches suggestions to plates greedily by IoU (>= 0.5 is a match); accepts a
                      match with IoU >= 0.9 unchanged, adjusts one with 0.5 <= IoU < 0.9 (correction =
                      mean distance of the four corners to the true ones, px), deletes a suggestion
                      that matches no plate, draws every plate that no suggestion matched
Effort = actions x seconds per action (``--draw/--adjust/--accept/--delete``). A second pre-label row
reshapes each suggestion to the plate's 520x112 mm aspect (same centre and width) before the
annotator sees it: the Haar cascade's training window is 3:1, so its boxes are taller than a plate.

Run: ``.venv/bin/python bench/prelabel_bench.py [--quick] [--json PATH]``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from annocloud_server.common.triton import TritonClient
from annocloud_server.modelassist.assist import match_boxes

sys.path.insert(0, str(Path(__file__).resolve().parent))

import plate_scenes
from readme_section import Tee, write_section
from triton_bench import local_triton

BEGIN, END = "<!-- prelabel-bench:begin -->", "<!-- prelabel-bench:end -->"

Box = plate_scenes.Box
ACCEPT_IOU = 0.9
"""A suggestion this close is accepted unchanged (the service counts 0.95 as unchanged)."""


def corner_displacement(a: Box, b: Box) -> float:
    corners = lambda x, y, w, h: np.array([(x, y), (x + w, y), (x, y + h), (x + w, y + h)])  # noqa: E731
    return float(np.linalg.norm(corners(*a) - corners(*b), axis=1).mean())


def to_plate_aspect(box: Box) -> Box:
    x, y, w, h = box
    height = w / plate_scenes.PLATE_ASPECT
    return (x, y + (h - height) / 2, w, height)


@dataclass
class Tally:
    plates: int = 0
    suggested: int = 0
    accepted: int = 0
    adjusted: int = 0
    deleted: int = 0
    drawn: int = 0
    corrections: list[float] = field(default_factory=list)

    def add(self, truths: tuple[Box, ...], suggestions: list[Box]) -> None:
        self.plates += len(truths)
        self.suggested += len(suggestions)
        # The same matching the service uses to measure how much of a suggestion survived.
        matches = match_boxes(suggestions, list(truths))
        for i, j, overlap in matches:
            if overlap >= ACCEPT_IOU:
                self.accepted += 1
            else:
                self.adjusted += 1
                self.corrections.append(corner_displacement(suggestions[i], truths[j]))
        self.deleted += len(suggestions) - len(matches)
        self.drawn += len(truths) - len(matches)


@dataclass(frozen=True)
class Costs:
    draw: float
    adjust: float
    accept: float
    delete: float


def summary(tally: Tally, costs: Costs) -> dict[str, float]:
    suggested = max(tally.suggested, 1)
    with_prelabels = (
        tally.accepted * costs.accept
        + tally.adjusted * costs.adjust
        + tally.deleted * costs.delete
        + tally.drawn * costs.draw
    )
    without = tally.plates * costs.draw
    return {
        "plates": tally.plates,
        "suggested": tally.suggested,
        "accepted_share": tally.accepted / suggested,
        "adjusted_share": tally.adjusted / suggested,
        "deleted_share": tally.deleted / suggested,
        "misses_drawn": tally.drawn,
        "recall": (tally.accepted + tally.adjusted) / max(tally.plates, 1),
        "mean_correction_px": float(np.mean(tally.corrections)) if tally.corrections else 0.0,
        "effort_without_s": without,
        "effort_with_s": with_prelabels,
        "saving": 1 - with_prelabels / without if without else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds x 20 scenes")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scenes", type=int, default=60, help="scenes per seed")
    parser.add_argument("--draw", type=float, default=7.0)
    parser.add_argument("--adjust", type=float, default=3.0)
    parser.add_argument("--accept", type=float, default=1.0)
    parser.add_argument("--delete", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    seeds, per_seed = (2, 20) if args.quick else (args.seeds, args.scenes)
    costs = Costs(args.draw, args.adjust, args.accept, args.delete)
    began = time.perf_counter()
    raw: dict[int, Tally] = {}
    reshaped: dict[int, Tally] = {}
    detect_s = 0.0
    with local_triton() as url, TritonClient(url, timeout=60) as triton:
        for seed in range(seeds):
            scenes = list(plate_scenes.scenes(seed, per_seed))
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=4) as pool:
                found = list(pool.map(lambda s: triton.detect("plate_detector", s.png), scenes))
            detect_s += time.perf_counter() - t0
            raw[seed], reshaped[seed] = Tally(), Tally()
            for scene, detections in zip(scenes, found, strict=True):
                boxes = [(b.x, b.y, b.width, b.height) for b in detections.boxes]
                raw[seed].add(scene.plates, boxes)
                reshaped[seed].add(scene.plates, [to_plate_aspect(b) for b in boxes])
    wall = time.perf_counter() - began

    def pooled(tallies: dict[int, Tally]) -> Tally:
        total = Tally()
        for t in tallies.values():
            for name in ("plates", "suggested", "accepted", "adjusted", "deleted", "drawn"):
                setattr(total, name, getattr(total, name) + getattr(t, name))
            total.corrections += t.corrections
        return total

    rows = {"Haar boxes as returned": pooled(raw), "Haar boxes reshaped to 4.6:1": pooled(reshaped)}
    per_seed_saving = {
        label: [summary(t, costs)["saving"] for t in tallies.values()]
        for label, tallies in (("Haar boxes as returned", raw), ("Haar boxes reshaped to 4.6:1", reshaped))
    }
    n_scenes = seeds * per_seed
    command = "`.venv/bin/python bench/prelabel_bench.py" + (" --quick" if args.quick else "") + "`"
    tee = Tee().start()
    print("## Annotator effort with and without pre-labels on generated plate scenes (issue #6)\n")
    first = summary(rows["Haar boxes as returned"], costs)
    print(
        f"Command: {command}, on {platform.machine()} with {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')} ({wall:.0f} s; plate_detector {1000 * detect_s / n_scenes:.0f} ms per scene, 4 concurrent clients). "
        f"{seeds} seeds x {per_seed} scenes = {n_scenes} scenes (640x480), {int(first['plates'])} plates. "
        f"Costs per action: draw {costs.draw:g} s, adjust {costs.adjust:g} s, accept {costs.accept:g} s, delete {costs.delete:g} s.\n"
    )
    print(
        "| pre-labels | suggested | accepted unchanged (IoU ≥ 0.9) | adjusted (0.5 ≤ IoU < 0.9) | deleted (false positives) | misses drawn | mean correction | effort with | effort without | saving: pooled (per seed) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    out = {}
    for label, tally in rows.items():
        s = summary(tally, costs)
        out[label] = {**s, "per_seed_saving": per_seed_saving[label]}
        seeds_text = ", ".join(f"{v:.0%}" for v in per_seed_saving[label])
        print(
            f"| {label} | {s['suggested']} | {s['accepted_share']:.1%} | {s['adjusted_share']:.1%} | {s['deleted_share']:.1%} | "
            f"{s['misses_drawn']} of {s['plates']} | {s['mean_correction_px']:.1f} px | {s['effort_with_s'] / 60:.1f} min | "
            f"{s['effort_without_s'] / 60:.1f} min | {s['saving']:.0%} ({seeds_text}) |"
        )
    report = tee.stop()
    if not args.quick:
        write_section(f"{BEGIN}\n{report.rstrip()}\n{END}", begin=BEGIN, end=END)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "wall_s": round(wall, 1),
                    "scenes": n_scenes,
                    "costs": asdict(costs),
                    "rows": out,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
