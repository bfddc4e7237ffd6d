"""Our JSONL in (the export's ``items.jsonl``), line by line: one item per line."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.common.v1 import common_pb2

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.model import (
    ItemBuilder,
    Record,
    RowError,
    RowProblem,
    attributes_of,
    finite_numbers,
)
from annocloud_server.formats.parsing import LineError, iter_jsonl
from annocloud_server.formats.safety import ByteStream, safe_file_name

MEDIA_TYPES = {"image": common_pb2.MEDIA_TYPE_IMAGE, "text": common_pb2.MEDIA_TYPE_TEXT}


def _points(raw: object, per_point: int) -> list[list[float]]:
    if not isinstance(raw, list):
        raise RowProblem("BAD_GEOMETRY", "points must be a list")
    points = [finite_numbers(p) if isinstance(p, list) else None for p in raw]
    if any(p is None or len(p) != per_point for p in points):
        raise RowProblem("BAD_GEOMETRY", f"every point must be {per_point} finite numbers")
    return [p for p in points if p is not None]


def jsonl_region(raw: object) -> ann.Region:
    """A region as the JSONL export writes it (``label``, ``type``, ``geometry``, ``attributes``)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("geometry"), dict):
        raise RowProblem("BAD_ROW", "a region is an object with a geometry object")
    geometry: dict[str, Any] = raw["geometry"]
    region = ann.Region(label=str(raw.get("label", "")), attributes=attributes_of(raw.get("attributes")))
    kind = raw.get("type")
    if kind == "box":
        numbers = finite_numbers(geometry.get(k) for k in ("x", "y", "width", "height"))
        if numbers is None:
            raise RowProblem("BAD_GEOMETRY", "a box needs finite x, y, width, height")
        region.box.CopyFrom(ann.Box(x=numbers[0], y=numbers[1], width=numbers[2], height=numbers[3]))
    elif kind == "polygon":
        points = _points(geometry.get("points"), 2)
        region.polygon.CopyFrom(ann.Polygon(points=[ann.Point(x=x, y=y) for x, y in points]))
    elif kind == "keypoints":
        points = _points(geometry.get("points"), 3)
        if any(v not in (0.0, 1.0, 2.0) for _, _, v in points):
            raise RowProblem("BAD_GEOMETRY", "keypoint visibility must be 0, 1 or 2")
        keypoints = [ann.Keypoint(x=x, y=y, visibility=int(v)) for x, y, v in points]
        region.keypoints.CopyFrom(ann.Keypoints(points=keypoints))
    elif kind == "span":
        start, end = geometry.get("start"), geometry.get("end")
        if not isinstance(start, int) or not isinstance(end, int):
            raise RowProblem("BAD_GEOMETRY", "a span needs integer start and end")
        region.span.CopyFrom(ann.TextSpan(start=start, end=end))
    else:
        raise RowProblem("BAD_ROW", f"unknown region type {kind!r}")
    return region


def _dimension(record: dict[str, Any], key: str) -> int:
    value = record.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RowProblem("BAD_ROW", f"{key} must be a non-negative integer")
    return value


def _read_record(record: object, spot: str, known: Collection[str] | None) -> Iterator[Record]:
    if not isinstance(record, dict):
        yield RowError(spot, "BAD_ROW", "a line must be a JSON object")
        return
    try:
        file_name = safe_file_name(str(record.get("file_name", "")))
        width, height = _dimension(record, "width"), _dimension(record, "height")
    except InvalidArgument as exc:
        yield RowError(spot, exc.reason, exc.message)
        return
    except RowProblem as exc:
        yield RowError(spot, exc.reason, exc.message)
        return
    media_type = MEDIA_TYPES.get(str(record.get("media_type", "image")), common_pb2.MEDIA_TYPE_UNSPECIFIED)
    text = record.get("text", "") if media_type == common_pb2.MEDIA_TYPE_TEXT else ""
    builder = ItemBuilder(
        file_name, width, height, where=spot, known_labels=known, media_type=media_type, text=str(text)
    )
    classes = record.get("classes", [])
    if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
        builder.labels.classes.extend(classes)
    else:
        builder.error(spot, "BAD_ROW", "classes must be a list of strings")
    builder.labels.not_sure = record.get("not_sure") is True
    regions = record.get("regions", [])
    for index, raw in enumerate(regions if isinstance(regions, list) else []):
        rspot = f"{spot}: regions[{index}]"
        try:
            region = jsonl_region(raw)
        except RowProblem as exc:
            builder.error(rspot, exc.reason, exc.message)
            continue
        builder.add(region, rspot)
    yield from builder.records()


def read_jsonl(
    stream: ByteStream, *, where: str = "items.jsonl", known_labels: Collection[str] | None = None
) -> Iterator[Record]:
    """Items of a JSONL stream; a line that is not valid JSON is a row error, the rest go on."""
    for entry in iter_jsonl(stream):
        if isinstance(entry, LineError):
            yield RowError(f"{where}:{entry.line}", entry.reason, entry.message)
        else:
            number, record = entry
            yield from _read_record(record, f"{where}:{number}", known_labels)
