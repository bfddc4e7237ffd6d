"""Triton throughput per model: dynamic batching on vs off under the same concurrent load (issue #6).

The bench starts its own tritonserver twice with ``scripts/infra/triton.sh`` (free ports on
127.0.0.1, a temporary ``ANNOCLOUD_INFRA_DIR``; stopped at the end): once on
``gpu-inference/model_repository`` as it is (dynamic batching on), once on a temporary copy whose
``config.pbtxt`` files have the ``dynamic_batching`` block removed (everything else, max_batch_size
included, unchanged, so the clients send identical requests). Per model, ``--clients`` gRPC clients
(tritonclient, one channel each) send one item per request in a closed loop; concurrency 1 on the
batching server is the reference. Both servers run side by side and the modes alternate per model
(best of ``--rounds``), so other load on the machine hits both alike. Figures: items/s over the wall time, p50/p99 request latency, and
items per model execution (Triton's statistics: how much the batcher merged).

Run: ``.venv/bin/python bench/triton_bench.py [--quick] [--json PATH]``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import tritonclient.grpc as triton_grpc
from annocloud_server.devstack import StackError, TritonServer, free_ports
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MODEL_REPOSITORY = REPO / "gpu-inference" / "model_repository"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import plate_scenes  # noqa: E402
from readme_section import Tee, write_section  # noqa: E402

BEGIN, END = "<!-- triton-bench:begin -->", "<!-- triton-bench:end -->"


@contextmanager
def local_triton(model_repository: Path = MODEL_REPOSITORY) -> Iterator[str]:
    """A tritonserver from triton.sh on free loopback ports; yields its gRPC address, stops it after."""
    grpc_port, http_port, metrics_port = free_ports(3)
    infra = Path(tempfile.mkdtemp(prefix="annocloud-bench-triton-"))
    server = TritonServer(
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        infra_dir=infra,
        model_repository=model_repository,
    )
    try:
        server.start()
        yield server.grpc_address
    finally:
        with contextlib.suppress(StackError):
            server.stop()
        shutil.rmtree(infra, ignore_errors=True)


def without_dynamic_batching(target: Path) -> Path:
    """A copy of the model repository whose configs have no dynamic_batching block."""
    shutil.copytree(MODEL_REPOSITORY, target, ignore=shutil.ignore_patterns("__pycache__"))
    for config in target.glob("*/config.pbtxt"):
        text = config.read_text()
        stripped = re.sub(r"dynamic_batching\s*\{[^}]*\}\s*", "", text)
        if stripped == text:
            raise RuntimeError(f"{config} has no dynamic_batching block to remove")
        config.write_text(stripped)
    return target


def encoded(pixels: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def text_image() -> bytes:
    image = np.tile(np.linspace(170, 235, 800, dtype=np.uint8)[None, :, None], (400, 1, 3))
    for text, origin, scale in (
        ("ANNOCLOUD 2026", (60, 110), 2.0),
        ("label every box", (120, 250), 1.4),
        ("plate A123BC77", (380, 350), 1.0),
    ):
        cv2.putText(
            image,
            text,
            origin,
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (25, 25, 25),
            max(2, round(scale * 2)),
            cv2.LINE_AA,
        )
    return cv2.imencode(".png", image)[1].tobytes()


SENTENCES = [
    "The annotator drew a box around the licence plate of the parked car.",
    "Reviewers accept most pre-labels and adjust the rest by a few pixels.",
    "Active learning picks the items the current head is least sure about.",
    "A receipt photographed at an angle with faded thermal print.",
]


@dataclass(frozen=True)
class Workload:
    model: str
    input_name: str
    items: tuple[bytes, ...]
    requests: int
    """Requests in the full run (quick: a quarter)."""


def workloads() -> list[Workload]:
    plates = tuple(s.png for s in plate_scenes.scenes(seed=0, count=8) if s.plates)[:4]
    return [
        Workload("face_detector", "IMAGE", (encoded(skimage.data.astronaut()),), 160),
        Workload("plate_detector", "IMAGE", plates, 240),
        Workload("text_detector", "IMAGE", (text_image(),), 64),
        Workload("text_embedder", "TEXT", tuple(s.encode() for s in SENTENCES), 320),
        Workload(
            "image_embedder", "IMAGE", (encoded(skimage.data.coffee()), encoded(skimage.data.chelsea())), 800
        ),
    ]


@dataclass
class Result:
    model: str
    mode: str
    clients: int
    requests: int
    seconds: float
    items_per_s: float
    p50_ms: float
    p99_ms: float
    items_per_execution: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_load(url: str, work: Workload, clients: int, requests: int) -> tuple[float, list[float]]:
    """Closed loop: ``clients`` threads share ``requests`` single-item requests; returns wall s and latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        client = triton_grpc.InferenceServerClient(url=url)
        try:
            barrier.wait()
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                data = np.empty((1, 1), dtype=np.object_)
                data[0, 0] = work.items[index % len(work.items)]
                request = triton_grpc.InferInput(work.input_name, [1, 1], "BYTES")
                request.set_data_from_numpy(data)
                began = time.perf_counter()
                client.infer(work.model, [request], client_timeout=120)
                elapsed = time.perf_counter() - began
                with lock:
                    latencies.append(elapsed)
        except BaseException as error:  # reported after the join
            errors.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    return wall, latencies


def executions(url: str, model: str) -> tuple[int, int]:
    client = triton_grpc.InferenceServerClient(url=url)
    try:
        stats = client.get_inference_statistics(model_name=model).model_stats[0]
        return int(stats.inference_count), int(stats.execution_count)
    finally:
        client.close()


def measure(url: str, work: Workload, mode: str, clients: int, requests: int) -> Result:
    run_load(url, work, clients, min(requests, max(clients, 8)))  # warm-up: caches, BLAS threads, ORT arenas
    before = executions(url, work.model)
    wall, latencies = run_load(url, work, clients, requests)
    after = executions(url, work.model)
    inferred, executed = after[0] - before[0], after[1] - before[1]
    return Result(
        model=work.model,
        mode=mode,
        clients=clients,
        requests=requests,
        seconds=round(wall, 2),
        items_per_s=round(requests / wall, 1),
        p50_ms=round(1000 * statistics.median(latencies), 1),
        p99_ms=round(1000 * percentile(latencies, 0.99), 1),
        items_per_execution=round(inferred / max(executed, 1), 2),
    )


def table(results: list[Result]) -> str:
    by = {(r.model, r.mode): r for r in results}
    models = list(dict.fromkeys(r.model for r in results))
    lines = [
        "| model | requests | concurrency 1: items/s (p50 / p99 ms) | 8 clients, batching off: items/s (p50 / p99 ms) | 8 clients, dynamic batching: items/s (p50 / p99 ms) | items per execution (batching on) | batching vs off |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in models:
        one, off, on = (
            by[(model, "concurrency 1")],
            by[(model, "batching off")],
            by[(model, "dynamic batching")],
        )

        def cell(r: Result) -> str:
            return f"{r.items_per_s:,.1f} ({r.p50_ms:.0f} / {r.p99_ms:.0f})"

        lines.append(
            f"| `{model}` | {on.requests} | {cell(one)} | {cell(off)} | {cell(on)} | {on.items_per_execution:.2f} | {on.items_per_s / off.items_per_s - 1:+.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the requests")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--models", nargs="*", help="only these models")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds per mode, best kept (default 2, quick 1)"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    work = [w for w in workloads() if not args.models or w.model in args.models]
    scale = 4 if args.quick else 1
    args.rounds = args.rounds or (1 if args.quick else 2)
    results: list[Result] = []
    # Both servers run at once (an idle one costs no CPU) and the modes alternate per model, best of
    # --rounds each, so load from other processes on the machine hits both modes alike.
    with (
        tempfile.TemporaryDirectory(prefix="annocloud-nobatch-") as tmp,
        local_triton() as batching,
        local_triton(without_dynamic_batching(Path(tmp) / "models")) as plain,
    ):
        for w in work:
            n = max(args.clients * 2, w.requests // scale)
            best: dict[str, Result] = {}
            for _ in range(args.rounds):
                for mode, url, clients, count in (
                    ("concurrency 1", batching, 1, max(8, n // 4)),
                    ("dynamic batching", batching, args.clients, n),
                    ("batching off", plain, args.clients, n),
                ):
                    result = measure(url, w, mode, clients, count)
                    print(f"  {result}", file=sys.stderr)
                    if mode not in best or result.items_per_s > best[mode].items_per_s:
                        best[mode] = result
            results.extend(best.values())
    wall = time.perf_counter() - began
    command = "`.venv/bin/python bench/triton_bench.py" + (" --quick" if args.quick else "") + "`"
    tee = Tee().start()
    print("## Triton throughput: dynamic batching vs batch size 1 (issue #6)\n")
    print(
        f"Command: {command}, on {platform.machine()} with {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')} ({wall:.0f} s). Best of {args.rounds} alternating round(s) per mode; "
        "concurrency 1 uses a quarter of the requests.\n"
    )
    print(table(results))
    report = tee.stop()
    if not args.quick:
        write_section(f"{BEGIN}\n{report.rstrip()}\n{END}", begin=BEGIN, end=END)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"command": command, "wall_s": round(wall, 1), "results": [asdict(r) for r in results]},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
