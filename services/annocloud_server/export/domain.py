"""Pure export logic: the item record, safe unique file stems, geometry maths and schema lookups."""

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


def box_xywh(box: annotations_pb2.Box) -> list[float]:
    return [box.x, box.y, box.width, box.height]


def polygon_flat(polygon: annotations_pb2.Polygon) -> list[float]:
    """[x1, y1, x2, y2, ...] as COCO segmentation wants it."""
    flat: list[float] = []
    for p in polygon.points:
        flat.extend((p.x, p.y))
    return flat


def polygon_bbox(polygon: annotations_pb2.Polygon) -> list[float]:
    """[x, y, w, h] of the polygon's bounds."""
    xs = [p.x for p in polygon.points]
    ys = [p.y for p in polygon.points]
    if not xs:
        return [0.0, 0.0, 0.0, 0.0]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def polygon_area(polygon: annotations_pb2.Polygon) -> float:
    """Area by the shoelace formula (absolute value)."""
    points = polygon.points
    n = len(points)
    twice = 0.0
    for i in range(n):
        a, b = points[i], points[(i + 1) % n]
        twice += a.x * b.y - b.x * a.y
    return abs(twice) / 2.0


def keypoints_flat(keypoints: annotations_pb2.Keypoints) -> tuple[list[float], int]:
    """COCO ``keypoints`` [x, y, v, ...] and ``num_keypoints`` (points with v > 0).

    A point with v = 0 (not labelled) is written as 0, 0, 0 as COCO requires.
    """
    flat: list[float] = []
    labelled = 0
    for p in keypoints.points:
        if p.visibility > 0:
            flat.extend((p.x, p.y, p.visibility))
            labelled += 1
        else:
            flat.extend((0, 0, 0))
    return flat, labelled


def keypoints_bbox(keypoints: annotations_pb2.Keypoints) -> list[float]:
    """[x, y, w, h] of the labelled (v > 0) points; zeros when none is labelled."""
    xs = [p.x for p in keypoints.points if p.visibility > 0]
    ys = [p.y for p in keypoints.points if p.visibility > 0]
    if not xs:
        return [0.0, 0.0, 0.0, 0.0]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def yolo_line(class_id: int, box: annotations_pb2.Box, width: int, height: int) -> str:
    """``class cx cy w h`` normalised by the image size, 6 decimals, not clipped."""
    cx = (box.x + box.width / 2.0) / width
    cy = (box.y + box.height / 2.0) / height
    return f"{class_id} {cx:.6f} {cy:.6f} {box.width / width:.6f} {box.height / height:.6f}"


@dataclass(frozen=True)
class Category:
    """A COCO category (or YOLO / VOC class) from the schema."""

    id: int
    name: str
    kind: int
    keypoint_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchemaView:
    """The object labels of the schema an export uses, by kind, in schema order."""

    version: int = 0
    coco: dict[str, Category] = field(default_factory=dict)
    boxes: dict[str, Category] = field(default_factory=dict)
    """Box labels with 0-based ids (YOLO class ids; VOC label map order)."""


COCO_KINDS = (tasks_pb2.OBJECT_KIND_BOX, tasks_pb2.OBJECT_KIND_POLYGON, tasks_pb2.OBJECT_KIND_KEYPOINTS)
_GEOMETRY_OF_KIND = {
    tasks_pb2.OBJECT_KIND_BOX: "box",
    tasks_pb2.OBJECT_KIND_POLYGON: "polygon",
    tasks_pb2.OBJECT_KIND_KEYPOINTS: "keypoints",
    tasks_pb2.OBJECT_KIND_TEXT_SPAN: "span",
}


def schema_view(schema: tasks_pb2.LabelSchema | None) -> SchemaView:
    """Categories of ``schema``: COCO ids 1.. over BOX/POLYGON/KEYPOINTS labels, box ids 0.."""
    if schema is None:
        return SchemaView()
    coco: dict[str, Category] = {}
    boxes: dict[str, Category] = {}
    for label in schema.objects:
        if label.kind in COCO_KINDS and label.name not in coco:
            coco[label.name] = Category(len(coco) + 1, label.name, label.kind, tuple(label.keypoint_names))
        if label.kind == tasks_pb2.OBJECT_KIND_BOX and label.name not in boxes:
            boxes[label.name] = Category(len(boxes), label.name, label.kind)
    return SchemaView(version=schema.version, coco=coco, boxes=boxes)


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
