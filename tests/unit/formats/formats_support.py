"""Builders shared by the format tests: zips in memory, export ↔ import adapters, a sample schema."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable

from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.common.v1 import common_pb2
from annocloud.export.v1 import export_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.export.domain import ExportItem, schema_view
from annocloud_server.export.formats import write_artifact
from annocloud_server.export.sink import ArtifactInfo
from annocloud_server.formats.importers import ImportFormat, import_archive
from annocloud_server.formats.model import ImportedItem, RowError
from annocloud_server.formats.safety import SafeZip

IMPORT_OF_EXPORT = {
    export_pb2.EXPORT_FORMAT_COCO: ImportFormat.COCO,
    export_pb2.EXPORT_FORMAT_PASCAL_VOC: ImportFormat.PASCAL_VOC,
    export_pb2.EXPORT_FORMAT_YOLO: ImportFormat.YOLO,
    export_pb2.EXPORT_FORMAT_YOLO_SEGMENTATION: ImportFormat.YOLO,
    export_pb2.EXPORT_FORMAT_CVAT: ImportFormat.CVAT,
    export_pb2.EXPORT_FORMAT_LABEL_STUDIO: ImportFormat.LABEL_STUDIO,
    export_pb2.EXPORT_FORMAT_JSONL: ImportFormat.JSONL,
}


def schema() -> tasks_pb2.LabelSchema:
    attrs = [tasks_pb2.AttributeDefinition(name="color"), tasks_pb2.AttributeDefinition(name="occluded")]
    return tasks_pb2.LabelSchema(
        version=3,
        classification_mode=tasks_pb2.CLASSIFICATION_MODE_MULTI,
        classes=[tasks_pb2.ClassLabel(name="day"), tasks_pb2.ClassLabel(name="night")],
        objects=[
            tasks_pb2.ObjectLabel(name="car", kind=tasks_pb2.OBJECT_KIND_BOX, attributes=attrs),
            tasks_pb2.ObjectLabel(name="truck", kind=tasks_pb2.OBJECT_KIND_BOX),
            tasks_pb2.ObjectLabel(name="road", kind=tasks_pb2.OBJECT_KIND_POLYGON, attributes=attrs),
            tasks_pb2.ObjectLabel(
                name="person", kind=tasks_pb2.OBJECT_KIND_KEYPOINTS, keypoint_names=["head", "hand", "foot"]
            ),
            tasks_pb2.ObjectLabel(name="entity", kind=tasks_pb2.OBJECT_KIND_TEXT_SPAN),
        ],
    )


def make_zip(files: dict[str, bytes | str]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


def export_item(item: ImportedItem, index: int) -> ExportItem:
    """An imported item as the export worker would hand it to a writer."""
    return ExportItem(
        item=f"datasets/d1/items/i{index}",
        item_id=f"i{index}",
        media_type=item.media_type,
        file_name=item.file_name,
        width=item.width,
        height=item.height,
        text=item.text,
        labels=item.labels,
    )


def image(file_name: str, regions: list[ann.Region], *, classes: Iterable[str] = (), width: int = 400,
          height: int = 200, not_sure: bool = False) -> ImportedItem:  # fmt: skip
    return ImportedItem(
        file_name=file_name,
        width=width,
        height=height,
        labels=ann.Labels(classes=list(classes), regions=regions, not_sure=not_sure),
    )


def text_record(file_name: str, text: str, regions: list[ann.Region]) -> ImportedItem:
    return ImportedItem(
        file_name=file_name,
        width=0,
        height=0,
        labels=ann.Labels(regions=regions),
        media_type=common_pb2.MEDIA_TYPE_TEXT,
        text=text,
    )


def export_zip(
    fmt: int, items: list[ImportedItem], label_schema: tasks_pb2.LabelSchema | None = None
) -> SafeZip:
    """Exports ``items`` in ``fmt`` and opens the artifact as an import would."""
    buffer = io.BytesIO()
    info = ArtifactInfo(format=fmt, project="projects/p1", export="projects/p1/exports/e1")
    view = schema_view(label_schema if label_schema is not None else schema())
    write_artifact(buffer, [export_item(item, i) for i, item in enumerate(items)], info=info, schema=view)
    buffer.seek(0)
    return SafeZip(buffer)


def read_all(
    fmt: ImportFormat, archive: SafeZip, **kwargs: object
) -> tuple[list[ImportedItem], list[RowError]]:
    items: list[ImportedItem] = []
    errors: list[RowError] = []
    for record in import_archive(archive, fmt, **kwargs):  # type: ignore[arg-type]
        (errors if isinstance(record, RowError) else items).append(record)  # type: ignore[arg-type]
    return items, errors


def round_trip(fmt: int, items: list[ImportedItem]) -> tuple[list[ImportedItem], list[RowError]]:
    """Export in ``fmt``, then import the artifact again."""
    return read_all(IMPORT_OF_EXPORT[fmt], export_zip(fmt, items))


def comparable(items: list[ImportedItem]) -> list[tuple[str, bytes]]:
    """File names and deterministic label bytes, for equality checks."""
    return [(i.file_name, i.labels.SerializeToString(deterministic=True)) for i in items]
