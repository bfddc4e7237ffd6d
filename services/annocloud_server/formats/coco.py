"""COCO JSON in: boxes, polygon and RLE segmentation, keypoints with visibility.

COCO does not order its sections, so the document is streamed (ijson, C backend) three times,
never loaded whole: (1) structure, strictness (:class:`~.parsing.StrictJsonReader`), categories
and an image id → position map; (2) annotations, each spooled to a temporary file on a per-image
chain; (3) images again, in order, each yielded with its annotations read back from the spool.
Memory grows with the number of images (the map and one offset per image), not the file size.
"""

from __future__ import annotations

import marshal
import struct
import tempfile
from array import array
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import IO, Any

import ijson  # type: ignore[import-untyped]  # no stubs; used through four calls
from annocloud.annotations.v1 import annotations_pb2 as ann

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.geometry import mask_to_polygons, rle_counts_from_string, rle_decode
from annocloud_server.formats.model import (
    ItemBuilder,
    Record,
    RowError,
    RowProblem,
    attributes_of,
    finite_numbers,
)
from annocloud_server.formats.parsing import MAX_JSON_BYTES, StrictJsonReader
from annocloud_server.formats.safety import ByteStream, safe_file_name

CocoSource = ByteStream | Callable[[], AbstractContextManager[ByteStream]]
"""A seekable stream (read three times from its start) or a function opening the file anew."""

_CHUNK = 1 << 18
_SECTIONS = ("images", "categories", "annotations")
_LINK = struct.Struct("<qI")
"""A spooled annotation: offset of the previous one of the same image (-1 for none), length."""


def _int_id(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _categories(raw: list[Any], where: str) -> tuple[dict[int, tuple[str, int]], list[RowError]]:
    """id → (name, number of keypoints), and errors for unusable categories."""
    categories: dict[int, tuple[str, int]] = {}
    errors: list[RowError] = []
    for index, cat in enumerate(raw):
        spot = f"{where}: categories[{index}]"
        cat_id = _int_id(cat.get("id")) if isinstance(cat, dict) else None
        name = cat.get("name") if isinstance(cat, dict) else None
        if cat_id is None or not isinstance(name, str) or not name:
            errors.append(RowError(spot, "BAD_ROW", "a category needs an integer id and a name"))
            continue
        if cat_id in categories:
            errors.append(RowError(spot, "BAD_ROW", f"category id {cat_id} appears twice"))
            continue
        keypoints = cat.get("keypoints")
        categories[cat_id] = (name, len(keypoints) if isinstance(keypoints, list) else 0)
    return categories, errors


def _keypoints(raw: object, expected: int) -> ann.Keypoints:
    numbers = finite_numbers(raw) if isinstance(raw, list) else None
    if numbers is None or len(numbers) % 3:
        raise RowProblem("BAD_GEOMETRY", "keypoints must be finite numbers, three per point")
    if expected and len(numbers) != 3 * expected:
        raise RowProblem("BAD_GEOMETRY", f"the category has {expected} keypoints, got {len(numbers) // 3}")
    points = []
    for i in range(0, len(numbers), 3):
        x, y, v = numbers[i : i + 3]
        if v not in (0.0, 1.0, 2.0):
            raise RowProblem("BAD_GEOMETRY", f"keypoint {i // 3}: visibility must be 0, 1 or 2 (got {v:g})")
        points.append(ann.Keypoint(x=x, y=y, visibility=int(v)) if v else ann.Keypoint())
    return ann.Keypoints(points=points)


def _polygons_of_rle(rle: dict[str, Any], image_size: tuple[int, int]) -> list[ann.Polygon]:
    size = rle.get("size")
    counts = rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_int_id(v) is not None for v in size)):
        raise RowProblem("BAD_GEOMETRY", "RLE size must be [height, width]")
    height, width = size
    if (width, height) != image_size:
        raise RowProblem("BAD_GEOMETRY", f"RLE size {width}x{height} differs from the image's")
    try:
        if isinstance(counts, str):
            runs = rle_counts_from_string(counts)
        elif isinstance(counts, list) and all(_int_id(c) is not None for c in counts):
            runs = counts
        else:
            raise ValueError("RLE counts must be a string or a list of integers")
        mask = rle_decode(runs, height, width)
    except ValueError as exc:
        raise RowProblem("BAD_GEOMETRY", str(exc)) from exc
    polygons = [
        ann.Polygon(points=[ann.Point(x=x, y=y) for x, y in outline]) for outline in mask_to_polygons(mask)
    ]
    if not polygons:
        raise RowProblem("BAD_GEOMETRY", "the RLE mask is empty")
    return polygons


def _geometries(a: dict[str, Any], keypoint_count: int, image_size: tuple[int, int]) -> list[ann.Region]:
    """The regions (without label) of one annotation: keypoints, else segmentation, else bbox."""
    keypoints = a.get("keypoints")
    if keypoint_count or (isinstance(keypoints, list) and keypoints):
        return [ann.Region(keypoints=_keypoints(keypoints, keypoint_count))]
    segmentation = a.get("segmentation")
    if isinstance(segmentation, dict):
        return [ann.Region(polygon=p) for p in _polygons_of_rle(segmentation, image_size)]
    if isinstance(segmentation, list) and segmentation:
        regions = []
        for part in segmentation:
            numbers = finite_numbers(part) if isinstance(part, list) else None
            if numbers is None or len(numbers) % 2:
                raise RowProblem("BAD_GEOMETRY", "a polygon must be a flat list of finite x, y numbers")
            points = [ann.Point(x=numbers[i], y=numbers[i + 1]) for i in range(0, len(numbers), 2)]
            regions.append(ann.Region(polygon=ann.Polygon(points=points)))
        return regions
    bbox = finite_numbers(a.get("bbox") or []) if isinstance(a.get("bbox"), list) else None
    if bbox is None or len(bbox) != 4:
        raise RowProblem("BAD_GEOMETRY", "bbox must be four finite numbers [x, y, width, height]")
    return [ann.Region(box=ann.Box(x=bbox[0], y=bbox[1], width=bbox[2], height=bbox[3]))]


def _add_annotation(
    builder: ItemBuilder, a: dict[str, Any], spot: str, categories: dict[int, tuple[str, int]]
) -> None:
    category = categories.get(_int_id(a.get("category_id")) or -1)
    if category is None:
        builder.error(spot, "UNKNOWN_LABEL", f"unknown category_id {a.get('category_id')!r}")
        return
    name, keypoint_count = category
    try:
        attributes = attributes_of(a.get("attributes"))
        regions = _geometries(a, keypoint_count, (builder.width, builder.height))
    except RowProblem as exc:
        builder.error(spot, exc.reason, exc.message)
        return
    for region in regions:
        region.label = name
        region.attributes.update(attributes)
        builder.add(region, spot)


def _image_header(image: object, spot: str) -> tuple[int, str, int, int, dict[str, Any]]:
    if not isinstance(image, dict) or _int_id(image.get("id")) is None:
        raise RowProblem("BAD_ROW", "an image needs an integer id")
    width, height = image.get("width", 0), image.get("height", 0)
    if _int_id(width) is None or _int_id(height) is None or width < 0 or height < 0:
        raise RowProblem("BAD_ROW", "width and height must be non-negative integers")
    try:
        file_name = safe_file_name(str(image.get("file_name", "")))
    except InvalidArgument as exc:
        raise RowProblem(exc.reason, exc.message) from exc
    extra = image.get("annocloud")
    return image["id"], file_name, width, height, extra if isinstance(extra, dict) else {}


def _opener(source: CocoSource) -> Callable[[], AbstractContextManager[ByteStream]]:
    if callable(source):
        return source
    stream: Any = source
    start = stream.tell()

    def reopen() -> AbstractContextManager[ByteStream]:
        stream.seek(start)
        return nullcontext(source)

    return reopen


def _json_invalid(where: str, exc: Exception) -> InvalidArgument:
    return InvalidArgument(f"{where} is not valid JSON ({exc})", reason="JSON_INVALID")


def _items(
    open_source: Callable[[], AbstractContextManager[ByteStream]], prefix: str, where: str
) -> Iterator[Any]:
    """The elements of one section, from a document pass 1 already found strict and well-formed."""
    with open_source() as stream:
        try:
            yield from ijson.items(stream, prefix, use_float=True, buf_size=_CHUNK)
        except ijson.JSONError as exc:  # the source changed between passes
            raise _json_invalid(where, exc) from exc


def _scan(
    open_source: Callable[[], AbstractContextManager[ByteStream]], where: str, max_bytes: int
) -> tuple[list[Any], dict[int, int], int]:
    """Pass 1: checks the whole document; returns the categories, image id → position of its first
    well-formed image, and the number of images."""
    categories: list[Any] = []
    positions: dict[int, int] = {}
    image_count = 0
    kinds: dict[str, str] = {}
    builder: Any = None
    with open_source() as stream:
        events = ijson.parse(
            StrictJsonReader(stream, max_bytes=max_bytes, where=where), use_float=True, buf_size=_CHUNK
        )
        try:
            first = next(events, None)
            if first is None or first[1] != "start_map":
                raise InvalidArgument(f"{where}: a COCO document is a JSON object", reason="COCO_INVALID")
            for prefix, event, value in events:
                if builder is not None:
                    builder.event(event, value)
                    if prefix in ("images.item", "categories.item") and event in ("end_map", "end_array"):
                        image_count = _took(builder.value, prefix, image_count, categories, positions)
                        builder = None
                elif prefix in ("images.item", "categories.item"):
                    if event in ("start_map", "start_array"):
                        builder = ijson.ObjectBuilder()
                        builder.event(event, value)
                    else:
                        image_count = _took(value, prefix, image_count, categories, positions)
                elif prefix in _SECTIONS and event != "end_array":
                    kinds[prefix] = event
        except ijson.JSONError as exc:
            raise _json_invalid(where, exc) from exc
    for key in _SECTIONS:
        kind = kinds.get(key, "null" if key != "images" else "missing")
        if kind != "start_array" and not (kind == "null" and key != "images"):
            raise InvalidArgument(f"{where}: {key!r} must be a list", reason="COCO_INVALID")
    return categories, positions, image_count


def _took(value: Any, prefix: str, image_count: int, categories: list[Any], positions: dict[int, int]) -> int:
    """Keeps one element of pass 1 (a category, or an image's id and position); the image count."""
    if prefix == "categories.item":
        categories.append(value)
        return image_count
    image_id = _int_id(value.get("id")) if isinstance(value, dict) else None
    if image_id is not None and image_id not in positions:
        try:
            _image_header(value, "")
            positions[image_id] = image_count
        except RowProblem:
            pass
    return image_count + 1


def _spool_annotations(
    annotations: Iterator[Any], positions: dict[int, int], heads: array[int], spool: IO[bytes], where: str
) -> Iterator[RowError]:
    """Pass 2: appends each annotation to its image's chain in ``spool``; errors for the rest."""
    offset = 0
    for index, a in enumerate(annotations):
        image_id = _int_id(a.get("image_id")) if isinstance(a, dict) else None
        if image_id is None:
            yield RowError(f"{where}: annotations[{index}]", "BAD_ROW", "an annotation needs an image_id")
            continue
        position = positions.get(image_id)
        if position is None:
            yield RowError(f"{where}: annotations[{index}]", "BAD_ROW", f"no image has id {image_id}")
            continue
        record = marshal.dumps((index, a))
        spool.write(_LINK.pack(heads[position], len(record)) + record)
        heads[position] = offset
        offset += _LINK.size + len(record)


def _chain(spool: IO[bytes], head: int) -> list[tuple[int, dict[str, Any]]]:
    """One image's annotations back from the spool, in document order."""
    found = []
    while head >= 0:
        spool.seek(head)
        head, length = _LINK.unpack(spool.read(_LINK.size))
        # Our own records in our own temporary file: unmarshalling them is safe.
        found.append(marshal.loads(spool.read(length)))  # noqa: S302
    found.reverse()
    return found


def read_coco(
    source: CocoSource,
    *,
    where: str = "annotations.json",
    known_labels: Collection[str] | None = None,
    max_bytes: int = MAX_JSON_BYTES,
    tmp_dir: str | None = None,
) -> Iterator[Record]:
    """Items of a COCO document, image by image, with a :class:`RowError` per bad row.

    Errors of categories and of annotations without a known image come first, then the images
    in order, each with the errors of its own annotations.
    """
    open_source = _opener(source)
    raw_categories, positions, image_count = _scan(open_source, where, max_bytes)
    categories, category_errors = _categories(raw_categories, where)
    yield from category_errors
    heads = array("q", [-1]) * image_count
    with tempfile.TemporaryFile(dir=tmp_dir) as spool:
        yield from _spool_annotations(
            _items(open_source, "annotations.item", where), positions, heads, spool, where
        )
        for index, image in enumerate(_items(open_source, "images.item", where)):
            spot = f"{where}: images[{index}]"
            try:
                image_id, file_name, width, height, extra = _image_header(image, spot)
            except RowProblem as exc:
                yield RowError(spot, exc.reason, exc.message)
                continue
            if positions.get(image_id) != index:
                yield RowError(spot, "BAD_ROW", f"image id {image_id} appears twice")
                continue
            builder = ItemBuilder(file_name, width, height, where=spot, known_labels=known_labels)
            classes = extra.get("classes", [])
            if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
                builder.labels.classes.extend(classes)
            builder.labels.not_sure = extra.get("not_sure") is True
            for a_index, a in _chain(spool, heads[index]):
                _add_annotation(builder, a, f"{where}: annotations[{a_index}] (id {a.get('id')})", categories)
            yield from builder.records()
