"""CVAT for images 1.1 XML in, streamed with iterparse: one ``<image>`` in memory at a time.

Shapes: ``box``, ``polygon``, ``points`` (every point visible) and ``skeleton`` (its ``points``
children in order; ``outside`` → visibility 0, ``occluded`` → 1, else 2); ``tag`` → an image
class. ``occluded="1"``, a non-zero ``z_order`` and a ``group_id`` become the attributes
``occluded`` = ``true``, ``z_order`` and ``group_id``; ``<attribute>`` children are attributes.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator

from annocloud.annotations.v1 import annotations_pb2 as ann

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.model import ItemBuilder, Record, RowError, finite_float, round_px
from annocloud_server.formats.parsing import iterparse_xml
from annocloud_server.formats.safety import ByteStream, safe_file_name

SHAPES = frozenset({"box", "polygon", "points", "skeleton"})
UNSUPPORTED = frozenset({"polyline", "ellipse", "mask", "cuboid", "track"})


def _float(element: ET.Element, key: str) -> float:
    return finite_float(element.get(key), key)


def parse_points(text: str) -> list[tuple[float, float]]:
    """``x1,y1;x2,y2;...`` as pairs; ValueError when a pair is not two finite numbers."""
    points = []
    for pair in text.split(";"):
        xy = pair.split(",")
        values = [float(v) for v in xy]
        if len(values) != 2 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{pair!r} is not a point x,y")
        points.append((values[0], values[1]))
    return points


def _skeleton(element: ET.Element) -> ann.Keypoints:
    keypoints = ann.Keypoints()
    for child in element.findall("points"):
        (x, y), *rest = parse_points(child.get("points", ""))
        if rest:
            raise ValueError("a skeleton point has more than one position")
        if child.get("outside") == "1":
            keypoints.points.append(ann.Keypoint())
        else:
            visibility = 1 if child.get("occluded") == "1" else 2
            keypoints.points.append(ann.Keypoint(x=x, y=y, visibility=visibility))
    return keypoints


def shape_region(element: ET.Element) -> ann.Region:
    """The region of one shape element; ValueError names what is wrong."""
    region = ann.Region(label=element.get("label", ""))
    if element.tag == "box":
        xtl, ytl = _float(element, "xtl"), _float(element, "ytl")
        xbr, ybr = _float(element, "xbr"), _float(element, "ybr")
        region.box.CopyFrom(ann.Box(x=xtl, y=ytl, width=round_px(xbr - xtl), height=round_px(ybr - ytl)))
    elif element.tag == "polygon":
        points = parse_points(element.get("points", ""))
        region.polygon.CopyFrom(ann.Polygon(points=[ann.Point(x=x, y=y) for x, y in points]))
    elif element.tag == "points":
        points = parse_points(element.get("points", ""))
        region.keypoints.CopyFrom(
            ann.Keypoints(points=[ann.Keypoint(x=x, y=y, visibility=2) for x, y in points])
        )
    else:
        region.keypoints.CopyFrom(_skeleton(element))
    if element.get("occluded") == "1":
        region.attributes["occluded"] = "true"
    if element.get("z_order", "0") not in ("", "0"):
        region.attributes["z_order"] = element.get("z_order", "")
    if element.get("group_id", "0") not in ("", "0"):
        region.attributes["group_id"] = element.get("group_id", "")
    for attribute in element.findall("attribute"):
        name = attribute.get("name")
        if name:
            region.attributes[name] = attribute.text or ""
    return region


def _meta_labels(labels: ET.Element) -> list[str]:
    """Top-level label names of ``<meta>`` (skeleton sub-labels, which have a parent, left out)."""
    return [
        (label.findtext("name") or "").strip()
        for label in labels.findall("label")
        if not (label.findtext("parent") or "").strip()
    ]


def _image_builder(element: ET.Element, spot: str, known: Collection[str] | None) -> ItemBuilder:
    file_name = safe_file_name(element.get("name", ""))
    try:
        width, height = int(element.get("width", "0")), int(element.get("height", "0"))
    except ValueError as exc:
        raise InvalidArgument(f"{spot}: width and height must be integers", reason="BAD_ROW") from exc
    return ItemBuilder(file_name, width, height, where=spot, known_labels=known)


def read_cvat(
    stream: ByteStream, *, where: str = "annotations.xml", known_labels: Collection[str] | None = None
) -> Iterator[Record]:
    """Items of a CVAT for images 1.1 document in document order.

    Without ``known_labels`` the labels of ``<meta>`` are the known ones (when it lists any).
    """
    known = known_labels
    stack: list[str] = []
    root: ET.Element | None = None
    builder: ItemBuilder | None = None
    image_error: RowError | None = None
    images = 0
    for event, element in iterparse_xml(stream, where=where):
        if event == "start":
            stack.append(element.tag)
            if root is None:
                root = element
            if element.tag == "image" and len(stack) == 2:
                spot = f"{where}: image[{images}] ({element.get('name', '')})"
                images += 1
                try:
                    builder, image_error = _image_builder(element, spot, known), None
                except InvalidArgument as exc:
                    builder, image_error = None, RowError(spot, exc.reason, exc.message)
            continue
        stack.pop()
        parent = stack[-1] if stack else ""
        if element.tag == "labels" and "meta" in stack and known_labels is None:
            names = _meta_labels(element)
            known = names or None
        elif parent == "image" and builder is not None:
            spot = f"{builder.where} <{element.tag}>"
            if element.tag == "tag":
                label = element.get("label", "")
                if known is not None and label not in known:
                    builder.error(spot, "UNKNOWN_LABEL", f"unknown label {label!r}")
                elif label not in builder.labels.classes:
                    builder.labels.classes.append(label)
            elif element.tag in SHAPES:
                try:
                    region = shape_region(element)
                except ValueError as exc:
                    builder.error(spot, "BAD_GEOMETRY", str(exc))
                    continue
                builder.add(region, spot)
            elif element.tag in UNSUPPORTED:
                builder.error(spot, "UNSUPPORTED_SHAPE", f"<{element.tag}> is not imported")
        elif element.tag == "image" and len(stack) == 1:
            if image_error is not None:
                yield image_error
            elif builder is not None:
                yield from builder.records()
            builder, image_error = None, None
            if root is not None:
                root.clear()
        elif element.tag == "track" and len(stack) == 1:
            yield RowError(
                f"{where}: <track>", "UNSUPPORTED_SHAPE", "tracks (video annotation) are not imported"
            )
            if root is not None:
                root.clear()
