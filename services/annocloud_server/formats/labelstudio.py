"""Label Studio JSON in: a list of tasks, percent coordinates converted to pixels.

Per task the first annotation that was not cancelled is read (its ``predictions`` when it has
none). Results: ``rectanglelabels`` → box, ``polygonlabels`` → polygon, ``keypointlabels`` →
keypoints, ``labels`` → text span, ``choices`` → image classes (``from_name`` ``not_sure`` sets
not_sure), and ``textarea`` / ``choices`` results that share a region's ``id`` → that region's
attributes (Label Studio's per-region controls).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.common.v1 import common_pb2

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.model import (
    ItemBuilder,
    Record,
    RowError,
    RowProblem,
    finite_numbers,
    round_px,
)
from annocloud_server.formats.parsing import MAX_JSON_BYTES, load_json
from annocloud_server.formats.safety import ByteStream, safe_file_name

GEOMETRY_TYPES = frozenset({"rectanglelabels", "polygonlabels", "keypointlabels", "labels"})
KEYPOINT_BLOCK = "annocloud"
"""Our extension on keypoint results: {"index", "count", "visibility"} of the point in its region."""


def task_file_name(data: dict[str, Any]) -> tuple[str, int]:
    """(file name, media type) of a task: the last path segment of ``data.image``, or a text item."""
    image = data.get("image")
    if isinstance(image, str) and image:
        path = unquote(urlsplit(image).path)
        return safe_file_name(path.rsplit("/", 1)[-1]), common_pb2.MEDIA_TYPE_IMAGE
    name = data.get("file_name")
    if isinstance(data.get("text"), str):
        return safe_file_name(name if isinstance(name, str) and name else "text"), common_pb2.MEDIA_TYPE_TEXT
    raise InvalidArgument("the task has neither data.image nor data.text", reason="BAD_ROW")


def _percent(value: dict[str, Any], keys: tuple[str, ...]) -> list[float]:
    numbers = finite_numbers(value.get(k) for k in keys)
    if numbers is None:
        raise RowProblem("BAD_GEOMETRY", f"{', '.join(keys)} must be finite numbers")
    return numbers


def _label(value: dict[str, Any], kind: str) -> str:
    labels = value.get(kind)
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
        raise RowProblem("BAD_ROW", f"value.{kind} must hold exactly one label")
    return labels[0]


def _size(result: dict[str, Any]) -> tuple[int, int]:
    width, height = result.get("original_width"), result.get("original_height")
    if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
        raise RowProblem(
            "MISSING_IMAGE_SIZE", "original_width and original_height are needed for percentages"
        )
    return width, height


def _geometry(result: dict[str, Any], kind: str) -> ann.Region:
    value = result.get("value")
    if not isinstance(value, dict):
        raise RowProblem("BAD_ROW", "a result needs a value object")
    region = ann.Region(label=_label(value, kind))
    if kind == "labels":
        start, end = value.get("start"), value.get("end")
        if not isinstance(start, int) or not isinstance(end, int):
            raise RowProblem("BAD_GEOMETRY", "start and end must be integers")
        region.span.CopyFrom(ann.TextSpan(start=start, end=end))
        return region
    width, height = _size(result)
    if kind == "rectanglelabels":
        x, y, w, h = _percent(value, ("x", "y", "width", "height"))
        if value.get("rotation", 0) not in (0, 0.0):
            raise RowProblem("UNSUPPORTED_SHAPE", "rotated rectangles are not imported")
        box = ann.Box(
            x=round_px(x * width / 100), y=round_px(y * height / 100),
            width=round_px(w * width / 100), height=round_px(h * height / 100),
        )  # fmt: skip
        region.box.CopyFrom(box)
    elif kind == "polygonlabels":
        raw = value.get("points")
        pairs = [finite_numbers(p) if isinstance(p, list) else None for p in raw or []]
        if not isinstance(raw, list) or any(p is None or len(p) != 2 for p in pairs):
            raise RowProblem("BAD_GEOMETRY", "points must be [x, y] pairs of finite numbers")
        points = [
            ann.Point(x=round_px(p[0] * width / 100), y=round_px(p[1] * height / 100)) for p in pairs if p
        ]
        region.polygon.CopyFrom(ann.Polygon(points=points))
    else:
        x, y = _percent(value, ("x", "y"))
        point = ann.Keypoint(x=round_px(x * width / 100), y=round_px(y * height / 100), visibility=2)
        region.keypoints.CopyFrom(ann.Keypoints(points=[point]))
    return region


def _merge_keypoint(groups: dict[str, ann.Region], result: dict[str, Any], region: ann.Region) -> bool:
    """Folds a keypoint result carrying our block into its parent region; True when it did."""
    block = result.get(KEYPOINT_BLOCK)
    parent = result.get("parentID")
    if not isinstance(block, dict) or not isinstance(parent, str):
        return False
    index, count, visibility = block.get("index"), block.get("count"), block.get("visibility")
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count <= 10_000):
        raise RowProblem("BAD_GEOMETRY", "annocloud.index / count are not valid")
    target = groups.get(parent)
    if target is None:
        target = ann.Region(label=region.label)
        target.keypoints.points.extend(ann.Keypoint() for _ in range(count))
        groups[parent] = target
    point = region.keypoints.points[0]
    v = visibility if visibility in (1, 2) else 2
    if len(target.keypoints.points) != count or target.label != region.label:
        raise RowProblem("BAD_GEOMETRY", f"keypoints of {parent!r} disagree on their label or count")
    target.keypoints.points[index].CopyFrom(ann.Keypoint(x=point.x, y=point.y, visibility=v))
    return True


def _annotation_results(task: dict[str, Any]) -> list[Any]:
    for key in ("annotations", "predictions"):
        entries = task.get(key)
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, dict) and not entry.get("was_cancelled"):
                    result = entry.get("result")
                    return result if isinstance(result, list) else []
    return []


def _read_task(task: object, spot: str, known: Collection[str] | None) -> Iterator[Record]:
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(task, dict) or not isinstance(data, dict):
        yield RowError(spot, "BAD_ROW", "a task is an object with a data object")
        return
    try:
        file_name, media_type = task_file_name(data)
    except InvalidArgument as exc:
        yield RowError(spot, exc.reason, exc.message)
        return
    text = data.get("text") if media_type == common_pb2.MEDIA_TYPE_TEXT else ""
    builder = ItemBuilder(
        file_name, 0, 0, where=spot, known_labels=known, media_type=media_type, text=str(text)
    )
    results = [r for r in _annotation_results(task) if isinstance(r, dict)]
    regions: dict[str, tuple[ann.Region, str]] = {}
    groups: dict[str, ann.Region] = {}
    for index, result in enumerate(results):
        kind, rid, rspot = result.get("type"), str(result.get("id", f"#{index}")), f"{spot}: result[{index}]"
        if kind not in GEOMETRY_TYPES:
            continue
        try:
            region = _geometry(result, str(kind))
            if kind != "labels":
                builder.width, builder.height = _size(result)
            if kind == "keypointlabels" and _merge_keypoint(groups, result, region):
                region, rid = groups[str(result["parentID"])], str(result["parentID"])
        except RowProblem as exc:
            builder.error(rspot, exc.reason, exc.message)
            continue
        regions.setdefault(rid, (region, rspot))
    for index, result in enumerate(results):
        kind, value = result.get("type"), result.get("value")
        if kind in GEOMETRY_TYPES or not isinstance(value, dict):
            continue
        target = regions.get(str(result.get("id")))
        texts = value.get("text") if kind == "textarea" else value.get("choices")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            builder.error(
                f"{spot}: result[{index}]", "UNSUPPORTED_RESULT", f"a {kind!r} result is not imported"
            )
        elif target is not None:
            target[0].attributes[str(result.get("from_name", ""))] = "\n".join(texts)
        elif kind == "choices" and result.get("from_name") == "not_sure":
            builder.labels.not_sure = texts == ["true"]
        elif kind == "choices":
            builder.labels.classes.extend(t for t in texts if t not in builder.labels.classes)
    for region, rspot in regions.values():
        builder.add(region, rspot)
    yield from builder.records()


def read_label_studio(
    stream: ByteStream,
    *,
    where: str = "tasks.json",
    known_labels: Collection[str] | None = None,
    max_bytes: int = MAX_JSON_BYTES,
) -> Iterator[Record]:
    """Items of a Label Studio JSON export (a list of tasks), task by task."""
    tasks = load_json(stream, max_bytes=max_bytes, where=where)
    if not isinstance(tasks, list):
        raise InvalidArgument(f"{where}: a Label Studio export is a JSON list of tasks", reason="BAD_FORMAT")
    for index, task in enumerate(tasks):
        yield from _read_task(task, f"{where}: tasks[{index}]", known_labels)
