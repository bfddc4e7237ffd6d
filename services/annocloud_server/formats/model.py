"""The neutral output of every importer, and the checks every imported region goes through.

An importer yields :class:`ImportedItem` (one per image / record, with the regions that passed)
and :class:`RowError` (one per row, region or file that did not), in source order. Nothing is
written anywhere: a caller that wants all-or-nothing reads the whole stream first and writes
only when it found no error (the import job does: ``ingestion/imports.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

from annocloud.annotations.v1 import annotations_pb2
from annocloud.common.v1 import common_pb2

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.labels import validate_structure

EDGE_TOLERANCE = 1e-6
"""Pixels a coordinate may pass the image edge by (rounding of percent / normalised formats)."""
PIXEL_DECIMALS = 6
"""Coordinates converted from percent or normalised values are rounded to 1e-6 px."""


@dataclass(frozen=True)
class ImportedItem:
    """One image (or text record) with its labels, as found in the source."""

    file_name: str
    """Relative POSIX path, checked by :func:`~.safety.safe_file_name` (the item's id in the source)."""
    width: int
    height: int
    labels: annotations_pb2.Labels
    media_type: int = common_pb2.MEDIA_TYPE_IMAGE
    text: str = ""
    where: str = ""
    """Where in the source the item was found (for messages)."""


@dataclass(frozen=True)
class RowError:
    """A row, region or file of the source that was not imported, and why."""

    where: str
    """File and row: ``annotations.json: annotations[3] (id 17)``, ``labels/a.txt:2``."""
    reason: str
    """Machine-readable: ``BAD_GEOMETRY``, ``GEOMETRY_OUT_OF_IMAGE``, ``UNKNOWN_LABEL``, ..."""
    message: str


Record = ImportedItem | RowError
SizeLookup = Callable[[str], "tuple[int, int] | None"]
"""file name → (width, height), for formats that do not carry image sizes (YOLO)."""


class RowProblem(Exception):
    """Raised while reading one row; the importer turns it into a :class:`RowError`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def attributes_of(raw: object) -> dict[str, str]:
    """A JSON object of scalar values as Region.attributes (bools as ``true`` / ``false``)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RowProblem("BAD_ATTRIBUTE", "attributes must be an object")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, dict | list) or value is None:
            raise RowProblem("BAD_ATTRIBUTE", f"attribute {key!r} must be a string, number or boolean")
        out[str(key)] = attribute_text(value)
    return out


def round_px(value: float) -> float:
    return round(value, PIXEL_DECIMALS) + 0.0


def attribute_text(value: object) -> str:
    """An attribute value from JSON as the string Region.attributes holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _outside(x: float, y: float, width: int, height: int) -> bool:
    return (
        x < -EDGE_TOLERANCE
        or y < -EDGE_TOLERANCE
        or x > width + EDGE_TOLERANCE
        or y > height + EDGE_TOLERANCE
    )


def region_problem(
    region: annotations_pb2.Region, *, width: int, height: int, text_length: int | None = None
) -> tuple[str, str] | None:
    """(reason, message) when the region cannot be imported into an item of this size; else None.

    Structure is checked by :func:`annocloud_server.common.labels.validate_structure` (finite
    numbers, sizes > 0, polygons of 3+ points, visibility 0/1/2), then every point against the
    image: none may be negative or past the edge. Image geometry needs a known image size.
    """
    try:
        validate_structure(annotations_pb2.Labels(regions=[region]))
    except InvalidArgument as exc:
        return exc.reason, exc.message.removeprefix("regions[0]").lstrip(": .")
    kind = region.WhichOneof("geometry")
    if kind == "span":
        if text_length is not None and region.span.end > text_length:
            return (
                "GEOMETRY_OUT_OF_IMAGE",
                f"span end {region.span.end} exceeds the text length {text_length}",
            )
        return None
    if width <= 0 or height <= 0:
        return "MISSING_IMAGE_SIZE", "the image size is unknown, so the geometry cannot be checked"
    points: list[tuple[float, float]]
    if kind == "box":
        b = region.box
        points = [(b.x, b.y), (b.x + b.width, b.y + b.height)]
    elif kind == "polygon":
        points = [(p.x, p.y) for p in region.polygon.points]
    else:
        points = [(p.x, p.y) for p in region.keypoints.points if p.visibility > 0]
    for x, y in points:
        if _outside(x, y, width, height):
            return "GEOMETRY_OUT_OF_IMAGE", f"point ({x:g}, {y:g}) is outside the {width}x{height} image"
    return None


def finite_float(text: str | None, name: str) -> float:
    """``text`` as a finite float; ValueError naming ``name`` otherwise (XML attributes and elements)."""
    try:
        value = float(text or "")
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number (got {text!r})")
    return value


def finite_numbers(values: Iterable[object]) -> list[float] | None:
    """The values as floats when every one is a finite JSON number (bools are not); else None."""
    out: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        number = float(value)
        if not math.isfinite(number):
            return None
        out.append(number)
    return out


class ItemBuilder:
    """Collects the regions of one item, turning each bad one into a :class:`RowError`."""

    def __init__(
        self,
        file_name: str,
        width: int,
        height: int,
        *,
        where: str,
        known_labels: Collection[str] | None = None,
        media_type: int = common_pb2.MEDIA_TYPE_IMAGE,
        text: str = "",
    ):
        self.file_name = file_name
        self.width = width
        self.height = height
        self.where = where
        self.media_type = media_type
        self.text = text
        self.labels = annotations_pb2.Labels()
        self.errors: list[RowError] = []
        self._known = known_labels

    def error(self, where: str, reason: str, message: str) -> None:
        self.errors.append(RowError(where, reason, message))

    def add(self, region: annotations_pb2.Region, where: str) -> bool:
        """Adds ``region`` when it is valid; otherwise records why not. True when added."""
        if not region.label:
            self.error(where, "UNKNOWN_LABEL", "the region has no label")
            return False
        if self._known is not None and region.label not in self._known:
            self.error(where, "UNKNOWN_LABEL", f"unknown label {region.label!r}")
            return False
        text_length = len(self.text) if self.media_type == common_pb2.MEDIA_TYPE_TEXT else None
        problem = region_problem(region, width=self.width, height=self.height, text_length=text_length)
        if problem is not None:
            self.error(where, *problem)
            return False
        self.labels.regions.append(region)
        return True

    def records(self) -> Iterator[Record]:
        """The errors found, then the item."""
        yield from self.errors
        yield ImportedItem(
            file_name=self.file_name,
            width=self.width,
            height=self.height,
            labels=self.labels,
            media_type=self.media_type,
            text=self.text,
            where=self.where,
        )
