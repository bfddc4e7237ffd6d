"""Format benchmarks (issue #4): export and import throughput and peak RSS for 100,000 and 1,000,000
box annotations in COCO and YOLO, measured on the export writers and the importers directly.

Run: ``.venv/bin/python bench/formats_bench.py [--sizes 100000 1000000]``. Every measurement runs
in a fresh subprocess that reports its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``), so
one run's memory cannot hide another's. The export streams generated items (10 boxes per image,
as a dataset-version export: file names and splits preset) through ``write_artifact`` into a
``LocalBlobStore`` writer; the import reads that artifact back with ``import_archive``.
Prints the figures and rewrites the formats section of bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import IO, Any, cast

from readme_section import write_section

BEGIN, END = "<!-- formats-bench:begin -->", "<!-- formats-bench:end -->"
BOXES_PER_IMAGE = 10
FORMATS = ("coco", "yolo")


def _items(annotations: int) -> Iterator[Any]:
    from annocloud.annotations.v1 import annotations_pb2 as ann
    from annocloud.common.v1 import common_pb2
    from annocloud_server.export.domain import ExportItem

    labels = ("car", "bus", "bike")
    for i in range(annotations // BOXES_PER_IMAGE):
        regions = [
            ann.Region(label=labels[(i + j) % 3], box=ann.Box(x=j * 30 + 1, y=i % 400, width=25, height=40))
            for j in range(BOXES_PER_IMAGE)
        ]
        yield ExportItem(
            item=f"datasets/d1/items/i{i}",
            item_id=f"i{i}",
            media_type=common_pb2.MEDIA_TYPE_IMAGE,
            file_name=f"img{i:07d}.jpg",
            width=640,
            height=480,
            text="",
            labels=ann.Labels(regions=regions),
            split=("train", "train", "train", "train", "train", "train", "train", "train", "val", "test")[
                i % 10
            ],
            stem=f"img{i:07d}",
            ext=".jpg",
        )


def _schema() -> Any:
    from annocloud.tasks.v1 import tasks_pb2
    from annocloud_server.export.domain import schema_view

    return schema_view(
        tasks_pb2.LabelSchema(
            version=1,
            objects=[
                tasks_pb2.ObjectLabel(name=n, kind=tasks_pb2.OBJECT_KIND_BOX) for n in ("car", "bus", "bike")
            ],
        )
    )


def child_export(fmt: str, annotations: int, work: Path) -> dict[str, Any]:
    from annocloud.export.v1 import export_pb2
    from annocloud_server.common.blobstore import LocalBlobStore
    from annocloud_server.export.formats import write_artifact
    from annocloud_server.export.sink import ArtifactInfo

    code = {"coco": export_pb2.EXPORT_FORMAT_COCO, "yolo": export_pb2.EXPORT_FORMAT_YOLO}[fmt]
    blobs = LocalBlobStore(work / "blobs")
    info = ArtifactInfo(format=code, project="projects/p", export="projects/p/exports/e", dataset_version="v")
    started = time.perf_counter()
    with blobs.open_writer(f"{fmt}-{annotations}.zip") as writer:
        result = write_artifact(
            cast(IO[bytes], writer), _items(annotations), info=info, schema=_schema(), tmp_dir=str(work)
        )
        _, size = writer.commit()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "annotations": result.annotation_count, "bytes": size}


def child_import(fmt: str, annotations: int, work: Path) -> dict[str, Any]:
    from annocloud_server.formats.importers import ImportFormat, import_archive
    from annocloud_server.formats.model import ImportedItem
    from annocloud_server.formats.safety import SafeZip

    path = work / "blobs" / f"{fmt}-{annotations}.zip"
    started = time.perf_counter()
    archive = SafeZip(str(path), max_entries=10_000_000)
    boxes = 0
    for record in import_archive(
        archive, ImportFormat(fmt), known_labels={"car", "bus", "bike"}, class_names=["car", "bus", "bike"]
    ):
        if isinstance(record, ImportedItem):
            boxes += len(record.labels.regions)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "annotations": boxes, "bytes": path.stat().st_size}


def run_child(kind: str, fmt: str, annotations: int, work: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, fmt, str(annotations), str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    return cast(dict[str, Any], json.loads(out.stdout.strip().splitlines()[-1]))


def write_readme(rows: list[tuple[str, str, int, dict[str, Any]]], command: str) -> None:
    lines = [
        BEGIN,
        "## Formats: streaming export and import (issue #4)",
        "",
        f"Command: `{command}`, on {platform.machine()} with 2 shared cores, Python {platform.python_version()}, "
        f"{date.today().isoformat()}. Writers and importers called directly on generated data "
        f"({BOXES_PER_IMAGE} boxes per image, dataset-version export with splits), one subprocess per row; "
        "peak RSS is the subprocess's own `ru_maxrss` (interpreter and imports included).",
        "",
        "| direction | format | box annotations | seconds | annotations/s | artifact MiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, fmt, size, r in rows:
        lines.append(
            f"| {kind} | {fmt.upper()} | {size:,} | {r['seconds']:.1f} | {r['annotations'] / r['seconds']:,.0f} "
            f"| {r['bytes'] / 2**20:.1f} | {r['rss_kib'] / 1024:.0f} |"
        )
    lines += [
        "",
        "Export peak RSS does not grow with the dataset for either format: items stream from a generator into",
        "the zip, the zip streams into the blob writer (one 256 KiB chunk held), per-file checksums and the zip's",
        "central directory (`StreamingZipFile`: one pickled `ZipInfo` per entry in a temporary file, no",
        "`NameToInfo`) spool to disk, so YOLO's one entry per image costs disk, not memory.",
        "The COCO importer streams the document three times with ijson (C backend) behind `StrictJsonReader`",
        "(size, depth and NaN refused chunk by chunk) and spools annotations per image to disk; what it keeps",
        "grows with the number of images (an id → position map and one offset each), not with the file.",
        "The YOLO importer reads label files one by one (it keeps the archive's directory, ~1 per image).",
        END,
    ]
    write_section("\n".join(lines), begin=BEGIN, end=END)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", nargs=4, metavar=("KIND", "FORMAT", "ANNOTATIONS", "DIR"))
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    if args.child:
        kind, fmt, count, work = args.child
        run = child_export if kind == "export" else child_import
        result = run(fmt, int(count), Path(work))
        result["rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(result))
        return 0
    rows: list[tuple[str, str, int, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="formats-bench-") as tmp:
        for fmt in FORMATS:
            for size in args.sizes:
                work = Path(tmp) / f"{fmt}-{size}"
                work.mkdir()
                for kind in ("export", "import"):
                    result = run_child(kind, fmt, size, work)
                    rows.append((kind, fmt, size, result))
                    rate = result["annotations"] / result["seconds"]
                    print(
                        f"{kind:6} {fmt:4} {size:>9,}: {result['seconds']:7.1f} s, {rate:>9,.0f} ann/s, "
                        f"peak RSS {result['rss_kib'] / 1024:.0f} MiB",
                        flush=True,
                    )
                (work / "blobs" / f"{fmt}-{size}.zip").unlink()
    if not args.no_readme:
        command = ".venv/bin/python bench/formats_bench.py" + (
            "" if args.sizes == [100_000, 1_000_000] else " --sizes " + " ".join(map(str, args.sizes))
        )
        write_readme(rows, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
