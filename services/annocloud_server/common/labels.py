"""Label validation against a schema and an item, and the geometry both annotations and qa need.

Pure functions over the proto messages: no grpc, no storage. Every refusal is an
:class:`InvalidArgument` whose message names the offending field (``regions[2].box: ...``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from annocloud.annotations.v1 import annotations_pb2
from annocloud.common.v1 import common_pb2
from annocloud.tasks.v1 import tasks_pb2

from annocloud_server.common.errors import InvalidArgument

BoxTuple = tuple[float, float, float, float]
"""(x, y, width, height)."""

MAX_REGIONS = 10_000
MAX_POINTS = 10_000
MAX_ATTRIBUTE_CHARS = 1000

_GEOMETRY_KIND = {
    "box": tasks_pb2.OBJECT_KIND_BOX,
    "polygon": tasks_pb2.OBJECT_KIND_POLYGON,
    "keypoints": tasks_pb2.OBJECT_KIND_KEYPOINTS,
    "span": tasks_pb2.OBJECT_KIND_TEXT_SPAN,
}


@dataclass(frozen=True)
class ItemFacts:
    """What validation needs to know about the labeled item."""

    media_type: int
    width: int = 0
    height: int = 0
    text: str = ""


def _fmt(value: float) -> str:
    return f"{value:g}"


def _finite(where: str, **values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise InvalidArgument(f"{where}: {name} is not a finite number", reason="BAD_GEOMETRY")


# --- structure (no schema): finite numbers, positive sizes, enough points -----------------------


def _check_box_structure(where: str, box: annotations_pb2.Box) -> None:
    _finite(where, x=box.x, y=box.y, width=box.width, height=box.height)
    if box.width <= 0 or box.height <= 0:
        raise InvalidArgument(
            f"{where}: width and height must be > 0 (got {_fmt(box.width)} x {_fmt(box.height)})",
            reason="BAD_GEOMETRY",
        )


def _check_polygon_structure(where: str, polygon: annotations_pb2.Polygon) -> None:
    if len(polygon.points) < 3:
        raise InvalidArgument(
            f"{where}: a polygon needs at least 3 points (got {len(polygon.points)})", reason="BAD_GEOMETRY"
        )
    if len(polygon.points) > MAX_POINTS:
        raise InvalidArgument(f"{where}: more than {MAX_POINTS} points", reason="BAD_GEOMETRY")
    for i, point in enumerate(polygon.points):
        _finite(f"{where}.points[{i}]", x=point.x, y=point.y)


def _check_keypoints_structure(where: str, keypoints: annotations_pb2.Keypoints) -> None:
    if len(keypoints.points) > MAX_POINTS:
        raise InvalidArgument(f"{where}: more than {MAX_POINTS} points", reason="BAD_GEOMETRY")
    for i, point in enumerate(keypoints.points):
        _finite(f"{where}.points[{i}]", x=point.x, y=point.y)
        if point.visibility not in (0, 1, 2):
            raise InvalidArgument(
                f"{where}.points[{i}]: visibility must be 0, 1 or 2 (got {point.visibility})",
                reason="BAD_GEOMETRY",
            )


def _check_span_structure(where: str, span: annotations_pb2.TextSpan) -> None:
    if span.start < 0 or span.end <= span.start:
        raise InvalidArgument(
            f"{where}: need 0 <= start < end (got start {span.start}, end {span.end})", reason="BAD_GEOMETRY"
        )


def _check_region_structure(where: str, region: annotations_pb2.Region) -> str:
    kind = region.WhichOneof("geometry")
    if kind is None:
        raise InvalidArgument(f"{where}: has no geometry", reason="GEOMETRY_MISMATCH")
    if kind == "box":
        _check_box_structure(f"{where}.box", region.box)
    elif kind == "polygon":
        _check_polygon_structure(f"{where}.polygon", region.polygon)
    elif kind == "keypoints":
        _check_keypoints_structure(f"{where}.keypoints", region.keypoints)
    else:
        _check_span_structure(f"{where}.span", region.span)
    return kind


def validate_structure(labels: annotations_pb2.Labels) -> None:
    """Checks what holds for any labels (model predictions): finite numbers, positive sizes."""
    if len(labels.regions) > MAX_REGIONS:
        raise InvalidArgument(f"more than {MAX_REGIONS} regions", reason="BAD_GEOMETRY")
    if len(set(labels.classes)) != len(labels.classes):
        raise InvalidArgument("classes contains duplicates", reason="BAD_CLASSIFICATION")
    for index, region in enumerate(labels.regions):
        if not region.label:
            raise InvalidArgument(f"regions[{index}]: label is required", reason="UNKNOWN_LABEL")
        _check_region_structure(f"regions[{index}]", region)


# --- against a schema and an item ---------------------------------------------------------------


def _check_classification(labels: annotations_pb2.Labels, schema: tasks_pb2.LabelSchema) -> None:
    mode = schema.classification_mode
    known = {c.name for c in schema.classes}
    if mode == tasks_pb2.CLASSIFICATION_MODE_UNSPECIFIED:
        if labels.classes or labels.not_sure:
            raise InvalidArgument("the schema has no classification question", reason="BAD_CLASSIFICATION")
        return
    for i, name in enumerate(labels.classes):
        if name not in known:
            raise InvalidArgument(f"classes[{i}]: unknown class {name!r}", reason="UNKNOWN_LABEL")
    if len(set(labels.classes)) != len(labels.classes):
        raise InvalidArgument("classes contains duplicates", reason="BAD_CLASSIFICATION")
    if labels.not_sure:
        if not schema.allow_not_sure:
            raise InvalidArgument("this schema does not allow 'not sure'", reason="BAD_CLASSIFICATION")
        if labels.classes:
            raise InvalidArgument("'not sure' cannot be combined with classes", reason="BAD_CLASSIFICATION")
        return
    if mode == tasks_pb2.CLASSIFICATION_MODE_SINGLE and len(labels.classes) != 1:
        raise InvalidArgument(
            f"exactly one class is required (got {len(labels.classes)})", reason="BAD_CLASSIFICATION"
        )


def _check_attributes(
    where: str, values: dict[str, str], definitions: Sequence[tasks_pb2.AttributeDefinition]
) -> None:
    by_name = {d.name: d for d in definitions}
    for name in sorted(values):
        value = values[name]
        definition = by_name.get(name)
        if definition is None:
            raise InvalidArgument(f"{where}.attributes: unknown attribute {name!r}", reason="BAD_ATTRIBUTE")
        spot = f"{where}.attributes[{name!r}]"
        if len(value) > MAX_ATTRIBUTE_CHARS:
            raise InvalidArgument(
                f"{spot}: longer than {MAX_ATTRIBUTE_CHARS} characters", reason="BAD_ATTRIBUTE"
            )
        if definition.type == tasks_pb2.ATTRIBUTE_TYPE_SELECT and value not in definition.values:
            raise InvalidArgument(
                f"{spot}: {value!r} is not one of {list(definition.values)}", reason="BAD_ATTRIBUTE"
            )
        if definition.type == tasks_pb2.ATTRIBUTE_TYPE_BOOLEAN and value not in ("true", "false"):
            raise InvalidArgument(
                f"{spot}: must be 'true' or 'false' (got {value!r})", reason="BAD_ATTRIBUTE"
            )
        if definition.type == tasks_pb2.ATTRIBUTE_TYPE_NUMBER:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise InvalidArgument(
                    f"{spot}: must be a finite number (got {value!r})", reason="BAD_ATTRIBUTE"
                )
    for definition in definitions:
        if definition.required and definition.name not in values:
            raise InvalidArgument(
                f"{where}.attributes: required attribute {definition.name!r} is missing",
                reason="BAD_ATTRIBUTE",
            )


def _inside(where: str, x: float, y: float, item: ItemFacts) -> None:
    if x < 0 or y < 0:
        raise InvalidArgument(
            f"{where}: ({_fmt(x)}, {_fmt(y)}) is outside the image (negative coordinate)",
            reason="GEOMETRY_OUT_OF_IMAGE",
        )
    if x > item.width:
        raise InvalidArgument(
            f"{where}: x {_fmt(x)} exceeds image width {item.width}", reason="GEOMETRY_OUT_OF_IMAGE"
        )
    if y > item.height:
        raise InvalidArgument(
            f"{where}: y {_fmt(y)} exceeds image height {item.height}", reason="GEOMETRY_OUT_OF_IMAGE"
        )


def _check_region_in_item(
    where: str, region: annotations_pb2.Region, label: tasks_pb2.ObjectLabel, item: ItemFacts
) -> None:
    kind = region.WhichOneof("geometry")
    is_text = kind == "span"
    if is_text and item.media_type != common_pb2.MEDIA_TYPE_TEXT:
        raise InvalidArgument(f"{where}.span: text spans need a text item", reason="GEOMETRY_MISMATCH")
    if not is_text and item.media_type != common_pb2.MEDIA_TYPE_IMAGE:
        raise InvalidArgument(
            f"{where}.{kind}: this geometry needs an image item", reason="GEOMETRY_MISMATCH"
        )
    if kind == "box":
        box = region.box
        spot = f"{where}.box"
        if box.x < 0 or box.y < 0:
            raise InvalidArgument(
                f"{spot}: corner ({_fmt(box.x)}, {_fmt(box.y)}) is outside the image",
                reason="GEOMETRY_OUT_OF_IMAGE",
            )
        if box.x + box.width > item.width:
            raise InvalidArgument(
                f"{spot}: x+width {_fmt(box.x + box.width)} exceeds image width {item.width}",
                reason="GEOMETRY_OUT_OF_IMAGE",
            )
        if box.y + box.height > item.height:
            raise InvalidArgument(
                f"{spot}: y+height {_fmt(box.y + box.height)} exceeds image height {item.height}",
                reason="GEOMETRY_OUT_OF_IMAGE",
            )
    elif kind == "polygon":
        for i, point in enumerate(region.polygon.points):
            _inside(f"{where}.polygon.points[{i}]", point.x, point.y, item)
    elif kind == "keypoints":
        points = region.keypoints.points
        if len(points) != len(label.keypoint_names):
            raise InvalidArgument(
                f"{where}.keypoints: label {label.name!r} has {len(label.keypoint_names)} keypoints "
                f"(got {len(points)})",
                reason="BAD_GEOMETRY",
            )
        for i, keypoint in enumerate(points):
            if keypoint.visibility > 0:
                _inside(f"{where}.keypoints.points[{i}]", keypoint.x, keypoint.y, item)
    else:
        if region.span.end > len(item.text):
            raise InvalidArgument(
                f"{where}.span: end {region.span.end} exceeds the text length {len(item.text)}",
                reason="GEOMETRY_OUT_OF_IMAGE",
            )


def validate_labels(labels: annotations_pb2.Labels, schema: tasks_pb2.LabelSchema, item: ItemFacts) -> None:
    """Checks ``labels`` against ``schema`` and ``item``; INVALID_ARGUMENT naming the first problem."""
    _check_classification(labels, schema)
    if len(labels.regions) > MAX_REGIONS:
        raise InvalidArgument(f"more than {MAX_REGIONS} regions", reason="BAD_GEOMETRY")
    objects = {o.name: o for o in schema.objects}
    for index, region in enumerate(labels.regions):
        where = f"regions[{index}]"
        label = objects.get(region.label)
        if label is None:
            raise InvalidArgument(f"{where}: unknown object label {region.label!r}", reason="UNKNOWN_LABEL")
        kind = _check_region_structure(where, region)
        if _GEOMETRY_KIND[kind] != label.kind:
            raise InvalidArgument(
                f"{where}: label {label.name!r} needs {tasks_pb2.ObjectKind.Name(label.kind)}, got {kind}",
                reason="GEOMETRY_MISMATCH",
            )
        _check_region_in_item(where, region, label, item)
        _check_attributes(where, dict(region.attributes), label.attributes)


# --- geometry -----------------------------------------------------------------------------------


def box_tuple(box: annotations_pb2.Box) -> BoxTuple:
    return (box.x, box.y, box.width, box.height)


def iou(a: BoxTuple, b: BoxTuple) -> float:
    """Intersection over union of two (x, y, w, h) boxes; 0 when either is empty."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def bounding_box(points: Iterable[tuple[float, float]], *, pad: float = 0.0) -> BoxTuple:
    """The (x, y, w, h) box around ``points``, grown by ``pad`` on every side (for degenerate sets)."""
    xs: list[float] = []
    ys: list[float] = []
    for x, y in points:
        xs.append(x)
        ys.append(y)
    if not xs:
        return (0.0, 0.0, 0.0, 0.0)
    x0, y0 = min(xs) - pad, min(ys) - pad
    return (x0, y0, max(xs) + pad - x0, max(ys) + pad - y0)


def mean_box(boxes: Sequence[BoxTuple]) -> BoxTuple:
    n = len(boxes)
    return (
        sum(b[0] for b in boxes) / n,
        sum(b[1] for b in boxes) / n,
        sum(b[2] for b in boxes) / n,
        sum(b[3] for b in boxes) / n,
    )


def region_bbox(region: annotations_pb2.Region) -> BoxTuple:
    """A box around any image region: the box itself, a polygon's points, visible keypoints."""
    kind = region.WhichOneof("geometry")
    if kind == "box":
        return box_tuple(region.box)
    if kind == "polygon":
        return bounding_box((p.x, p.y) for p in region.polygon.points)
    if kind == "keypoints":
        return bounding_box(((p.x, p.y) for p in region.keypoints.points if p.visibility > 0), pad=1.0)
    return (0.0, 0.0, 0.0, 0.0)
