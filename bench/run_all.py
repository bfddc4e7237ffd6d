"""Embedded-default benchmarks (issue #2): ingestion rate, LeaseNextTask latency with 8 workers,
annotation submit rate, export time for 10,000 annotations.

Run: ``make bench`` (or ``.venv/bin/python bench/run_all.py [--quick]``). Prints the figures and
rewrites the "Embedded default" section of bench/README.md with them and the command.
"""

from __future__ import annotations

import argparse
import io
import platform
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from annocloud.annotations.v1 import annotations_pb2, annotations_pb2_grpc
from annocloud.export.v1 import export_pb2, export_pb2_grpc
from annocloud.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from annocloud.qa.v1 import qa_pb2, qa_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud_server.common.auth import ADMIN, ANNOTATOR, Authenticator, make_principal
from annocloud_server.embedded import EmbeddedStack, load_or_create_secret, start_embedded
from PIL import Image
from readme_section import write_section

BEGIN, END = "<!-- embedded-bench:begin -->", "<!-- embedded-bench:end -->"


class Bench:
    def __init__(self, stack: EmbeddedStack, org: str):
        auth = Authenticator(load_or_create_secret(stack.data_dir))
        self.stack = stack
        self.admin = auth.metadata_for(make_principal(org, "key:bench", [ADMIN]))
        self.workers = [auth.metadata_for(make_principal(org, f"user:w{i}", [ANNOTATOR])) for i in range(8)]
        channel = grpc.insecure_channel(stack.grpc_address)
        self.ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel)
        self.tasks = tasks_pb2_grpc.TaskServiceStub(channel)
        self.annotations = annotations_pb2_grpc.AnnotationServiceStub(channel)
        self.qa = qa_pb2_grpc.QaServiceStub(channel)
        self.export = export_pb2_grpc.ExportServiceStub(channel)

    def dataset(self, name: str) -> str:
        request = ingestion_pb2.CreateDatasetRequest(dataset=ingestion_pb2.Dataset(display_name=name))
        return self.ingestion.CreateDataset(request, metadata=self.admin).dataset.name

    def project(self, dataset: str, schema: tasks_pb2.LabelSchema) -> str:
        request = tasks_pb2.CreateProjectRequest(
            project=tasks_pb2.Project(display_name="bench", redundancy=1, datasets=[dataset]), schema=schema
        )
        return self.tasks.CreateProject(request, metadata=self.admin).project.name

    def wait_queued(self, project: str, count: int) -> None:
        while (
            self.tasks.GetProject(
                tasks_pb2.GetProjectRequest(name=project), metadata=self.admin
            ).project.task_counts.queued
            < count
        ):
            time.sleep(0.2)


def small_png(seed: int, size: int = 64) -> bytes:
    rng = random.Random(seed)
    image = Image.frombytes("L", (size, size), bytes(rng.getrandbits(8) for _ in range(size * size)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def upload_stream(parent: str, name: str, data: bytes) -> Iterator[ingestion_pb2.UploadItemRequest]:
    yield ingestion_pb2.UploadItemRequest(
        header=ingestion_pb2.UploadItemHeader(parent=parent, file_name=name)
    )
    yield ingestion_pb2.UploadItemRequest(chunk=data)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_ingest(b: Bench, count: int) -> dict[str, float]:
    dataset = b.dataset(f"ingest-{count}")
    images = [small_png(count * 1_000_003 + i) for i in range(count)]
    start = time.perf_counter()

    def one(i: int) -> None:
        b.ingestion.UploadItem(upload_stream(dataset, f"img_{i:06d}.png", images[i]), metadata=b.admin)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(count)))
    uploaded = time.perf_counter() - start
    b.stack.runtime.wait_idle(timeout=600)
    settled = time.perf_counter() - start
    return {"items": count, "items_per_s": count / uploaded, "seconds": uploaded, "events_settled_s": settled}


def bench_lease_and_submit(b: Bench, items: int) -> dict[str, float]:
    dataset = b.dataset("lease")
    records = [
        ingestion_pb2.TextRecord(text=f"ticket {i}: my parcel {i * 7919} is late") for i in range(items)
    ]
    for start in range(0, items, 1000):
        b.ingestion.CreateTextItems(
            ingestion_pb2.CreateTextItemsRequest(parent=dataset, records=records[start : start + 1000]),
            metadata=b.admin,
        )
    schema = tasks_pb2.LabelSchema(
        classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
        classes=[tasks_pb2.ClassLabel(name="late"), tasks_pb2.ClassLabel(name="other")],
    )
    project = b.project(dataset, schema)
    b.wait_queued(project, items)
    lease_ms: list[float] = []
    submit_ms: list[float] = []
    lock = threading.Lock()

    def worker(md: tuple[tuple[str, str | bytes], ...]) -> None:
        while True:
            t0 = time.perf_counter()
            try:
                task = b.tasks.LeaseNextTask(tasks_pb2.LeaseNextTaskRequest(parent=project), metadata=md).task
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return
                raise
            t1 = time.perf_counter()
            b.annotations.SubmitAnnotation(
                annotations_pb2.SubmitAnnotationRequest(
                    task=task.name,
                    lease_id=task.lease.lease_id,
                    labels=annotations_pb2.Labels(classes=["late"]),
                ),
                metadata=md,
            )
            t2 = time.perf_counter()
            with lock:
                lease_ms.append((t1 - t0) * 1000)
                submit_ms.append((t2 - t1) * 1000)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(md,)) for md in b.workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {
        "tasks": len(lease_ms),
        "lease_p50_ms": statistics.median(lease_ms),
        "lease_p99_ms": pct(lease_ms, 0.99),
        "submit_p50_ms": statistics.median(submit_ms),
        "submit_p99_ms": pct(submit_ms, 0.99),
        "annotations_per_s": len(submit_ms) / elapsed,
    }


def bench_export(b: Bench, images: int, boxes_per_image: int) -> dict[str, float]:
    dataset = b.dataset("export")
    for i in range(images):
        b.ingestion.UploadItem(
            upload_stream(dataset, f"e_{i:05d}.png", small_png(7_000_000 + i, 128)), metadata=b.admin
        )
    schema = tasks_pb2.LabelSchema(
        objects=[tasks_pb2.ObjectLabel(name="thing", kind=tasks_pb2.OBJECT_KIND_BOX)]
    )
    project = b.project(dataset, schema)
    b.wait_queued(project, images)

    def worker(md: tuple[tuple[str, str | bytes], ...]) -> None:
        rng = random.Random(hash(md))
        while True:
            try:
                task = b.tasks.LeaseNextTask(tasks_pb2.LeaseNextTaskRequest(parent=project), metadata=md).task
            except grpc.RpcError:
                return
            regions = [
                annotations_pb2.Region(
                    label="thing",
                    box=annotations_pb2.Box(x=rng.uniform(0, 60), y=rng.uniform(0, 60), width=20, height=20),
                )
                for _ in range(boxes_per_image)
            ]
            b.annotations.SubmitAnnotation(
                annotations_pb2.SubmitAnnotationRequest(
                    task=task.name,
                    lease_id=task.lease.lease_id,
                    labels=annotations_pb2.Labels(regions=regions),
                ),
                metadata=md,
            )

    threads = [threading.Thread(target=worker, args=(md,)) for md in b.workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    while (
        b.qa.GetProjectQuality(
            qa_pb2.GetProjectQualityRequest(project=project), metadata=b.admin
        ).accepted_items
        < images
    ):
        time.sleep(0.2)
    b.stack.runtime.wait_idle(timeout=600)
    figures: dict[str, float] = {"annotations": images * boxes_per_image}
    for name, fmt in (("coco", export_pb2.EXPORT_FORMAT_COCO), ("yolo", export_pb2.EXPORT_FORMAT_YOLO)):
        start = time.perf_counter()
        job = b.export.CreateExport(
            export_pb2.CreateExportRequest(parent=project, format=fmt), metadata=b.admin
        ).export
        while (
            job := b.export.GetExport(export_pb2.GetExportRequest(name=job.name), metadata=b.admin).export
        ).state not in (
            export_pb2.EXPORT_STATE_DONE,
            export_pb2.EXPORT_STATE_FAILED,
        ):
            time.sleep(0.02)
        assert job.state == export_pb2.EXPORT_STATE_DONE, job.error_message
        assert job.annotation_count == images * boxes_per_image, job.annotation_count
        figures[f"{name}_seconds"] = time.perf_counter() - start
    return figures


def timed(label: str, fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    print(f"running {label} ...", flush=True)
    result = fn()
    print(
        f"  {label}: "
        + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, does not touch README.md")
    args = parser.parse_args()
    sizes = (100, 300) if args.quick else (1_000, 10_000)
    lease_items = 300 if args.quick else 2_000
    export_images = 100 if args.quick else 1_000
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            stack = start_embedded(data_dir=Path(tmp) / f"ingest{size}")
            try:
                results[f"ingest_{size}"] = timed(
                    f"ingest {size}", lambda stack=stack, size=size: bench_ingest(Bench(stack, "b"), size)
                )
            finally:
                stack.stop()
        stack = start_embedded(data_dir=Path(tmp) / "work")
        try:
            bench = Bench(stack, "b")
            results["lease"] = timed(
                "lease+submit, 8 workers", lambda: bench_lease_and_submit(bench, lease_items)
            )
            results["export"] = timed("export 10 boxes/image", lambda: bench_export(bench, export_images, 10))
        finally:
            stack.stop()
    if not args.quick:
        write_readme(results, sizes)


def write_readme(results: dict[str, dict[str, float]], sizes: tuple[int, int]) -> None:
    i1, i2 = (results[f"ingest_{s}"] for s in sizes)
    lease, export = results["lease"], results["export"]
    section = f"""{BEGIN}
## Embedded default (issue #2)

Command: `make bench` (= `.venv/bin/python bench/run_all.py`), on {platform.machine()} with
{__import__("os").cpu_count()} cores, Python {platform.python_version()}, {time.strftime("%Y-%m-%d")}.
Everything in one process (`start_embedded`), clients over real gRPC on 127.0.0.1.

| figure | value |
|---|---|
| items ingested per second, {sizes[0]:,} small PNGs (4 concurrent gRPC uploads) | {i1["items_per_s"]:.0f} /s ({i1["seconds"]:.1f} s; events settled after {i1["events_settled_s"]:.1f} s) |
| items ingested per second, {sizes[1]:,} small PNGs | {i2["items_per_s"]:.0f} /s ({i2["seconds"]:.1f} s; events settled after {i2["events_settled_s"]:.1f} s) |
| `LeaseNextTask` p50 / p99, 8 concurrent workers, {int(lease["tasks"]):,} tasks | {lease["lease_p50_ms"]:.1f} ms / {lease["lease_p99_ms"]:.1f} ms |
| `SubmitAnnotation` p50 / p99 (same run) | {lease["submit_p50_ms"]:.1f} ms / {lease["submit_p99_ms"]:.1f} ms |
| annotations submitted per second (8 workers, lease + submit loop) | {lease["annotations_per_s"]:.0f} /s |
| export of {int(export["annotations"]):,} box annotations: COCO | {export["coco_seconds"]:.2f} s (request → DONE) |
| export of {int(export["annotations"]):,} box annotations: YOLO | {export["yolo_seconds"]:.2f} s |
{END}"""
    write_section(section, begin=BEGIN, end=END)


if __name__ == "__main__":
    main()
