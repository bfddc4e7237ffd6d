"""The artifact of an export: one writer per format streams the items into a zip, then a manifest.

Writers live in ``writers_boxes`` (COCO, VOC, YOLO), ``writers_tools`` (CVAT, Label Studio) and
``writers_tables`` (JSONL, CSV); each consumes its items once, in constant memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import IO

from annocloud.export.v1 import export_pb2

from annocloud_server.export.domain import FORMAT_NAMES, ExportItem, SchemaView
from annocloud_server.export.sink import ArtifactInfo, ExportResult, ZipSink
from annocloud_server.export.writers_boxes import write_coco, write_voc, write_yolo, write_yolo_segmentation
from annocloud_server.export.writers_tables import write_csv, write_jsonl
from annocloud_server.export.writers_tools import write_cvat, write_label_studio

Writer = Callable[[ZipSink, Iterable[ExportItem], SchemaView, ArtifactInfo, "str | None"], ExportResult]
WRITERS: dict[int, Writer] = {
    export_pb2.EXPORT_FORMAT_COCO: write_coco,
    export_pb2.EXPORT_FORMAT_PASCAL_VOC: write_voc,
    export_pb2.EXPORT_FORMAT_YOLO: write_yolo,
    export_pb2.EXPORT_FORMAT_JSONL: write_jsonl,
    export_pb2.EXPORT_FORMAT_CVAT: write_cvat,
    export_pb2.EXPORT_FORMAT_LABEL_STUDIO: write_label_studio,
    export_pb2.EXPORT_FORMAT_CSV: write_csv,
    export_pb2.EXPORT_FORMAT_YOLO_SEGMENTATION: write_yolo_segmentation,
}


def write_artifact(
    out: IO[bytes],
    items: Iterable[ExportItem],
    *,
    info: ArtifactInfo,
    schema: SchemaView,
    tmp_dir: str | None = None,
) -> ExportResult:
    """Writes the zip of ``items`` in ``info.format`` to ``out``, with ``manifest.json`` last."""
    writer = WRITERS[info.format]
    sink = ZipSink(out, info.date_time)
    try:
        result = writer(sink, items, schema, info, tmp_dir)
        result.files = dict(sink.hashes)
        manifest = {
            "format": FORMAT_NAMES[info.format],
            "project": info.project,
            "export": info.export,
            "created_time": info.created_time,
            "schema_version": schema.version,
            "counts": {
                "items": result.item_count,
                "annotations": result.annotation_count,
                "skipped_regions": result.skipped_region_count,
            },
            "files": result.files,
        }
        sink.write(
            "manifest.json", (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        )
    finally:
        sink.close()
    return result
