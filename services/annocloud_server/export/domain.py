"""Pure export logic: the item record, safe unique file stems and schema lookups.

Geometry maths lives in :mod:`annocloud_server.formats.geometry`, shared with the importers.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from annocloud.annotations.v1 import annotations_pb2
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.export.v1 import export_pb2
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2

FORMAT_NAMES: dict[int, str] = {
    export_pb2.EXPORT_FORMAT_COCO: "coco",
    export_pb2.EXPORT_FORMAT_PASCAL_VOC: "pascal_voc",
    export_pb2.EXPORT_FORMAT_YOLO: "yolo",
    export_pb2.EXPORT_FORMAT_JSONL: "jsonl",
    export_pb2.EXPORT_FORMAT_CVAT: "cvat",
    export_pb2.EXPORT_FORMAT_LABEL_STUDIO: "label_studio",
    export_pb2.EXPORT_FORMAT_CSV: "csv",
    export_pb2.EXPORT_FORMAT_YOLO_SEGMENTATION: "yolo_segmentation",
}
"""Formats the service writes, with the name the manifest uses."""

MEDIA_TYPE_NAMES: dict[int, str] = {
    common_pb2.MEDIA_TYPE_UNSPECIFIED: "unspecified",
    common_pb2.MEDIA_TYPE_IMAGE: "image",
    common_pb2.MEDIA_TYPE_TEXT: "text",
}

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_STEM_CHARS = 150


@dataclass(frozen=True)
class ExportItem:
    """One accepted item with everything a format writer needs (no lookups)."""

    item: str
    """`datasets/{dataset}/items/{item}`."""
    item_id: str
    media_type: int
    file_name: str
    width: int
    height: int
    text: str
    labels: annotations_pb2.Labels
    agreement: float = 1.0
    vote_count: int = 0
    schema_version: int = 0
    accepted_by: str = ""
    accept_time: str = ""
    """RFC 3339, empty when unknown."""
    split: str = ""
    """``train`` / ``val`` / ``test`` in a dataset-version export, else empty."""
    stem: str = ""
    """File stem already made unique for the whole dataset version (empty: allocate one)."""
    ext: str = ""

    @property
    def is_image(self) -> bool:
        """Image formats (COCO, VOC, YOLO) take every item that is not a text record."""
        return self.media_type != common_pb2.MEDIA_TYPE_TEXT


def item_id_of(item_name: str) -> str:
    """The last segment of `datasets/{dataset}/items/{item}` (the whole string when it has none)."""
    return item_name.rstrip("/").rsplit("/", 1)[-1] or "item"


def export_item(item: str, label: qa_pb2.AcceptedLabel, context: events_pb2.ItemContext) -> ExportItem:
    """The writer's view of a stored acceptance."""
    item_id = item_id_of(item)
    return ExportItem(
        item=item,
        item_id=item_id,
        media_type=context.media_type,
        file_name=context.file_name or item_id,
        width=context.width,
        height=context.height,
        text=context.text,
        labels=label.labels,
        agreement=label.agreement,
        vote_count=label.vote_count,
        schema_version=label.schema_version,
        accepted_by=label.accepted_by,
        accept_time=label.accept_time.ToJsonString() if label.HasField("accept_time") else "",
    )


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)


def split_file_name(file_name: str, fallback: str) -> tuple[str, str]:
    """(stem, extension) of a file name, both reduced to ``[A-Za-z0-9._-]``.

    Directories are dropped, leading dots removed (no hidden files, no ``..``), and an empty stem
    becomes ``fallback``.
    """
    base = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(base)
    safe_stem = _safe(stem).lstrip(".")[:MAX_STEM_CHARS]
    safe_ext = _safe(ext)[:16] if ext else ""
    if not safe_stem:
        safe_stem = _safe(fallback).lstrip(".")[:MAX_STEM_CHARS] or "item"
    return safe_stem, safe_ext


class StemAllocator:
    """Hands out stems unique within one artifact (compared case-insensitively).

    A stem already taken is prefixed with the item id (``<item_id>_<stem>``); should that be taken
    too, a counter is appended.
    """

    def __init__(self) -> None:
        self._used: set[str] = set()

    def allocate_item(self, item: ExportItem) -> tuple[str, str]:
        """A dataset version's items carry their stem (unique in the version); others get one here."""
        if item.stem:
            return item.stem, item.ext
        return self.allocate(item.file_name, item.item_id)

    def taken(self, stem: str) -> bool:
        return stem.lower() in self._used

    def allocate(self, file_name: str, item_id: str) -> tuple[str, str]:
        """(stem, extension) for an item; ``stem + extension`` is its file name in the artifact."""
        stem, ext = split_file_name(file_name, item_id)
        candidate = stem
        if candidate.lower() in self._used:
            candidate = f"{_safe(item_id)}_{stem}"[: MAX_STEM_CHARS + 64]
            base, counter = candidate, 2
            while candidate.lower() in self._used:
                candidate = f"{base}-{counter}"
                counter += 1
        self._used.add(candidate.lower())
        return candidate, ext


def finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def region_is_finite(region: annotations_pb2.Region) -> bool:
    """False when any coordinate is NaN or infinite (such a region is skipped, never written)."""
    kind = region.WhichOneof("geometry")
    if kind == "box":
        b = region.box
        return finite(b.x, b.y, b.width, b.height)
    if kind == "polygon":
        return all(finite(p.x, p.y) for p in region.polygon.points)
    if kind == "keypoints":
        return all(finite(p.x, p.y) for p in region.keypoints.points)
    return kind == "span"


@dataclass(frozen=True)
class Category:
    """A COCO category (or YOLO / VOC class) from the schema."""

    id: int
    name: str
    kind: int
    keypoint_names: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    """Names of the label's attribute definitions, in schema order."""


@dataclass(frozen=True)
class SchemaView:
    """The object labels of the schema an export uses, by kind, in schema order."""

    version: int = 0
    coco: dict[str, Category] = field(default_factory=dict)
    boxes: dict[str, Category] = field(default_factory=dict)
    """Box labels with 0-based ids (YOLO class ids; VOC label map order)."""
    polygons: dict[str, Category] = field(default_factory=dict)
    """Polygon labels with 0-based ids (YOLO segmentation class ids)."""
    classes: tuple[str, ...] = ()
    """Classes of the classification question, in schema order."""


COCO_KINDS = (tasks_pb2.OBJECT_KIND_BOX, tasks_pb2.OBJECT_KIND_POLYGON, tasks_pb2.OBJECT_KIND_KEYPOINTS)
_GEOMETRY_OF_KIND = {
    tasks_pb2.OBJECT_KIND_BOX: "box",
    tasks_pb2.OBJECT_KIND_POLYGON: "polygon",
    tasks_pb2.OBJECT_KIND_KEYPOINTS: "keypoints",
    tasks_pb2.OBJECT_KIND_TEXT_SPAN: "span",
}


def schema_view(schema: tasks_pb2.LabelSchema | None) -> SchemaView:
    """Categories of ``schema``: COCO ids 1.. over BOX/POLYGON/KEYPOINTS labels, box and polygon ids 0.."""
    if schema is None:
        return SchemaView()
    coco: dict[str, Category] = {}
    boxes: dict[str, Category] = {}
    polygons: dict[str, Category] = {}
    for label in schema.objects:
        attributes = tuple(a.name for a in label.attributes)
        if label.kind in COCO_KINDS and label.name not in coco:
            keypoint_names = tuple(label.keypoint_names)
            coco[label.name] = Category(len(coco) + 1, label.name, label.kind, keypoint_names, attributes)
        if label.kind == tasks_pb2.OBJECT_KIND_BOX and label.name not in boxes:
            boxes[label.name] = Category(len(boxes), label.name, label.kind, (), attributes)
        if label.kind == tasks_pb2.OBJECT_KIND_POLYGON and label.name not in polygons:
            polygons[label.name] = Category(len(polygons), label.name, label.kind, (), attributes)
    return SchemaView(
        version=schema.version,
        coco=coco,
        boxes=boxes,
        polygons=polygons,
        classes=tuple(dict.fromkeys(c.name for c in schema.classes)),
    )


def geometry_matches(category: Category, region: annotations_pb2.Region) -> bool:
    """Whether the region's geometry is the one its schema label's kind asks for."""
    if region.WhichOneof("geometry") != _GEOMETRY_OF_KIND.get(category.kind):  # type: ignore[call-overload]
        return False
    if category.kind == tasks_pb2.OBJECT_KIND_KEYPOINTS:
        return len(region.keypoints.points) == len(category.keypoint_names)
    return True


def truthy(value: str) -> bool:
    """Attribute strings that mean yes ("true", "1", "yes", "y", "on"; any case)."""
    return value.strip().lower() in {"true", "1", "yes", "y", "on"}
