"""The artifact of an export: one writer per format streams the items into a zip, then a manifest.

Writers live in ``writers_boxes`` (COCO, VOC, YOLO), ``writers_tools`` (CVAT, Label Studio) and
``writers_tables`` (JSONL, CSV); each consumes its items once, in constant memory.
"""

from __future__ import annotations

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
    entries_out: IO[bytes] | None = None,
) -> ExportResult:
    """Writes the zip of ``items`` in ``info.format`` to ``out``, with ``manifest.json`` last.

    ``out`` may be unseekable (a blob writer). ``entries_out`` receives the manifest's ``files``
    table (manifest.json's own entry included) for the sidecar manifest.
    """
    writer = WRITERS[info.format]
    sink = ZipSink(out, info.date_time, tmp_dir)
    try:
        result = writer(sink, items, schema, info, tmp_dir)
        result.file_count = sink.file_count
        header: dict[str, object] = {
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
        }
        if info.splits:
            header["dataset_version"] = info.dataset_version
            header["counts"]["splits"] = dict(sorted(result.split_counts.items()))  # type: ignore[index]
        sink.write_manifest(header)
        if entries_out is not None:
            sink.copy_entries(entries_out)
    finally:
        sink.close()
    return result
