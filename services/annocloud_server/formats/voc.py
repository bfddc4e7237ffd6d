"""Pascal VOC XML in, one file at a time: boxes with pose, truncated, difficult, occluded, attributes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator
from pathlib import PurePosixPath

from annocloud.annotations.v1 import annotations_pb2 as ann

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.model import ItemBuilder, Record, RowError, finite_float, round_px
from annocloud_server.formats.parsing import parse_xml
from annocloud_server.formats.safety import MIB, SafeZip, safe_file_name

MAX_VOC_FILE_BYTES = 4 * MIB
FLAGS = ("truncated", "difficult", "occluded")
"""0/1 elements kept as attributes "true" when 1 (0 is the default and is not kept)."""


def _number(element: ET.Element, path: str) -> float:
    return finite_float(element.findtext(path), path)


def _size(root: ET.Element) -> tuple[int, int]:
    try:
        return int(root.findtext("size/width") or 0), int(root.findtext("size/height") or 0)
    except ValueError:
        return 0, 0


def _object_region(obj: ET.Element) -> ann.Region:
    name = (obj.findtext("name") or "").strip()
    xmin, ymin = _number(obj, "bndbox/xmin"), _number(obj, "bndbox/ymin")
    xmax, ymax = _number(obj, "bndbox/xmax"), _number(obj, "bndbox/ymax")
    box = ann.Box(x=xmin, y=ymin, width=round_px(xmax - xmin), height=round_px(ymax - ymin))
    region = ann.Region(label=name, box=box)
    pose = (obj.findtext("pose") or "").strip()
    if pose and pose != "Unspecified":
        region.attributes["pose"] = pose
    for flag in FLAGS:
        if (obj.findtext(flag) or "0").strip() == "1":
            region.attributes[flag] = "true"
    for attribute in obj.findall("attributes/attribute"):
        key = attribute.findtext("name")
        if key:
            region.attributes[key] = attribute.findtext("value") or ""
    return region


def read_voc_file(
    data: bytes, *, where: str, known_labels: Collection[str] | None = None
) -> Iterator[Record]:
    """The item of one VOC annotation file (``where`` names it, e.g. ``Annotations/a.xml``)."""
    try:
        root = parse_xml(data, where=where, max_bytes=MAX_VOC_FILE_BYTES)
    except InvalidArgument as exc:
        yield RowError(where, exc.reason, exc.message)
        return
    if root.tag != "annotation":
        yield RowError(where, "BAD_ROW", f"the root element is <{root.tag}>, not <annotation>")
        return
    raw_name = (root.findtext("filename") or "").strip() or PurePosixPath(where).stem
    try:
        file_name = safe_file_name(raw_name)
    except InvalidArgument as exc:
        yield RowError(where, exc.reason, exc.message)
        return
    width, height = _size(root)
    builder = ItemBuilder(file_name, width, height, where=where, known_labels=known_labels)
    for index, obj in enumerate(root.findall("object")):
        spot = f"{where}: object[{index}]"
        try:
            region = _object_region(obj)
        except ValueError as exc:
            builder.error(spot, "BAD_GEOMETRY", str(exc))
            continue
        builder.add(region, spot)
    yield from builder.records()


def labelmap_names(text: str) -> list[str]:
    """Label names of a VOC ``labelmap.txt`` (``name:color:parts:actions`` per line)."""
    names = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            names.append(line.split(":", 1)[0].strip())
    return names


def read_voc(archive: SafeZip, *, known_labels: Collection[str] | None = None) -> Iterator[Record]:
    """Every ``Annotations/*.xml`` of a VOC archive (every ``*.xml`` when it has no such folder).

    Without ``known_labels``, a ``labelmap.txt`` at the top decides which labels are known.
    """
    names = archive.names()
    if known_labels is None and "labelmap.txt" in names:
        known_labels = labelmap_names(archive.read("labelmap.txt", max_bytes=MIB).decode("utf-8", "replace"))
    xml_files = [n for n in names if n.lower().endswith(".xml")]
    in_folder = [n for n in xml_files if n.startswith("Annotations/")]
    for name in in_folder or xml_files:
        if archive.size(name) > MAX_VOC_FILE_BYTES:
            yield RowError(name, "XML_TOO_LARGE", f"larger than {MAX_VOC_FILE_BYTES} bytes")
            continue
        data = archive.read(name, max_bytes=MAX_VOC_FILE_BYTES)
        yield from read_voc_file(data, where=name, known_labels=known_labels)
