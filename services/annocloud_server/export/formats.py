"""Format writers: stream accepted items into a zip (COCO, Pascal VOC, YOLO, JSONL) plus a manifest.

Every writer takes an iterable of :class:`ExportItem` and consumes it once, keeping only the stems
already used in memory; bulky sections that must come after the streamed part (COCO annotations,
VOC / YOLO image lists) are spooled to a temporary file first. The README documents each mapping.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from annocloud.annotations.v1 import annotations_pb2
from annocloud.common.v1 import common_pb2
from annocloud.export.v1 import export_pb2

from annocloud_server.export.domain import (
    FORMAT_NAMES,
    MEDIA_TYPE_NAMES,
    ExportItem,
    SchemaView,
    StemAllocator,
    box_xywh,
    finite,
    geometry_matches,
    keypoints_bbox,
    keypoints_flat,
    polygon_area,
    polygon_bbox,
    polygon_flat,
    region_is_finite,
    truthy,
    yolo_line,
)

_FLUSH_BYTES = 1 << 16
_COPY_BYTES = 1 << 20
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass
class ExportResult:
    """What a writer wrote."""

    item_count: int = 0
    annotation_count: int = 0
    skipped_region_count: int = 0
    files: dict[str, str] = field(default_factory=dict)
    """sha256 of every file except manifest.json."""


@dataclass(frozen=True)
class ArtifactInfo:
    """Facts about the export that go into the artifact."""

    format: int
    project: str
    export: str
    created_time: str = ""
    """RFC 3339."""
    date_time: tuple[int, int, int, int, int, int] = (1980, 1, 1, 0, 0, 0)
    """Timestamp of every zip entry (the job's creation time), so reruns give identical bytes."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class _HashingWriter:
    """Buffers text into a zip entry and hashes exactly the bytes written."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self._sha = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0

    def write(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_bytes(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._sha.update(data)
            self._raw.write(data)
            self._buffer.clear()
            self._buffered = 0

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class ZipSink:
    """A zip being written, remembering the sha256 of each file."""

    def __init__(self, out: IO[bytes], date_time: tuple[int, int, int, int, int, int]):
        self._zip = zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self._date_time = date_time
        self.hashes: dict[str, str] = {}

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, self._date_time)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    def write(self, name: str, data: bytes) -> None:
        self.hashes[name] = hashlib.sha256(data).hexdigest()
        self._zip.writestr(self._info(name), data)

    @contextmanager
    def stream(self, name: str) -> Iterator[_HashingWriter]:
        with self._zip.open(self._info(name), "w", force_zip64=True) as raw:
            writer = _HashingWriter(raw)
            yield writer
            writer.flush()
        self.hashes[name] = writer.hexdigest()

    def close(self) -> None:
        self._zip.close()


def _copy(spool: IO[bytes], out: _HashingWriter) -> None:
    spool.seek(0)
    while chunk := spool.read(_COPY_BYTES):
        out.write_bytes(chunk)


def _attributes(region: annotations_pb2.Region) -> dict[str, str]:
    return dict(sorted(region.attributes.items()))


# --- COCO ----------------------------------------------------------------------------------------


def coco_annotation(region: annotations_pb2.Region, schema: SchemaView) -> dict[str, Any] | None:
    """The COCO annotation of a region (without id / image_id); None when it cannot be written."""
    category = schema.coco.get(region.label)
    if category is None or not region_is_finite(region) or not geometry_matches(category, region):
        return None
    ann: dict[str, Any] = {"category_id": category.id, "iscrowd": 0}
    kind = region.WhichOneof("geometry")
    if kind == "box":
        ann["bbox"] = box_xywh(region.box)
        ann["area"] = region.box.width * region.box.height
    elif kind == "polygon":
        ann["segmentation"] = [polygon_flat(region.polygon)]
        ann["bbox"] = polygon_bbox(region.polygon)
        ann["area"] = polygon_area(region.polygon)
    else:
        flat, labelled = keypoints_flat(region.keypoints)
        bbox = keypoints_bbox(region.keypoints)
        ann["keypoints"] = flat
        ann["num_keypoints"] = labelled
        ann["bbox"] = bbox
        ann["area"] = bbox[2] * bbox[3]
    if region.attributes:
        ann["attributes"] = _attributes(region)
    return ann


def _coco_categories(schema: SchemaView) -> list[dict[str, Any]]:
    categories: list[dict[str, Any]] = []
    for category in schema.coco.values():
        entry: dict[str, Any] = {"id": category.id, "name": category.name, "supercategory": ""}
        if category.keypoint_names:
            entry["keypoints"] = list(category.keypoint_names)
            entry["skeleton"] = []
        categories.append(entry)
    return categories


def write_coco(
    sink: ZipSink, items: Iterable[ExportItem], schema: SchemaView, info: ArtifactInfo, tmp_dir: str | None
) -> ExportResult:
    result = ExportResult()
    stems = StemAllocator()
    header = {
        "description": f"annocloud export {info.export}",
        "version": str(schema.version),
        "date_created": info.created_time,
    }
    with tempfile.TemporaryFile(dir=tmp_dir) as spool, sink.stream("annotations.json") as out:
        out.write(f'{{"info":{_dumps(header)},"licenses":[],"categories":{_dumps(_coco_categories(schema))}')
        out.write(',"images":[')
        for item in items:
            if not item.is_image:
                continue
            result.item_count += 1
            stem, ext = stems.allocate(item.file_name, item.item_id)
            image = {
                "id": result.item_count,
                "file_name": stem + ext,
                "width": item.width,
                "height": item.height,
                "annocloud": {
                    "item": item.item,
                    "classes": list(item.labels.classes),
                    "not_sure": item.labels.not_sure,
                },
            }
            out.write(("," if result.item_count > 1 else "") + _dumps(image))
            for region in item.labels.regions:
                ann = coco_annotation(region, schema)
                if ann is None:
                    result.skipped_region_count += 1
                    continue
                result.annotation_count += 1
                ann = {"id": result.annotation_count, "image_id": result.item_count, **ann}
                prefix = "," if result.annotation_count > 1 else ""
                spool.write((prefix + _dumps(ann)).encode("utf-8"))
        out.write('],"annotations":[')
        _copy(spool, out)
        out.write("]}")
    return result


# --- Pascal VOC ----------------------------------------------------------------------------------


def _xml_text(value: object) -> str:
    return _XML_ILLEGAL.sub("", str(value))


def _sub(parent: ET.Element, tag: str, text: object) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = _xml_text(text)
    return element


def voc_xml(item: ExportItem, file_name: str, regions: list[annotations_pb2.Region]) -> bytes:
    """The VOC annotation of one image; ``regions`` are its writable boxes."""
    root = ET.Element("annotation")
    _sub(root, "folder", "images")
    _sub(root, "filename", file_name)
    source = ET.SubElement(root, "source")
    _sub(source, "database", "annocloud")
    _sub(source, "annotation", item.item)
    size = ET.SubElement(root, "size")
    _sub(size, "width", item.width)
    _sub(size, "height", item.height)
    _sub(size, "depth", 3)
    _sub(root, "segmented", 0)
    for region in regions:
        obj = ET.SubElement(root, "object")
        _sub(obj, "name", region.label)
        _sub(obj, "pose", "Unspecified")
        _sub(obj, "truncated", 0)
        _sub(obj, "difficult", 0)
        _sub(obj, "occluded", 1 if truthy(region.attributes.get("occluded", "")) else 0)
        box = region.box
        bndbox = ET.SubElement(obj, "bndbox")
        _sub(bndbox, "xmin", repr(float(box.x)))
        _sub(bndbox, "ymin", repr(float(box.y)))
        _sub(bndbox, "xmax", repr(float(box.x + box.width)))
        _sub(bndbox, "ymax", repr(float(box.y + box.height)))
        extra = {k: v for k, v in _attributes(region).items() if k != "occluded"}
        if extra:
            attributes = ET.SubElement(obj, "attributes")
            for key, value in extra.items():
                attribute = ET.SubElement(attributes, "attribute")
                _sub(attribute, "name", key)
                _sub(attribute, "value", value)
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def _writable_boxes(
    item: ExportItem, schema: SchemaView, result: ExportResult
) -> list[annotations_pb2.Region]:
    boxes: list[annotations_pb2.Region] = []
    for region in item.labels.regions:
        category = schema.boxes.get(region.label)
        if category is None or not region_is_finite(region) or not geometry_matches(category, region):
            result.skipped_region_count += 1
        else:
            boxes.append(region)
    return boxes


def _one_line(name: str) -> str:
    return name.replace("\r", " ").replace("\n", " ")


def write_voc(
    sink: ZipSink, items: Iterable[ExportItem], schema: SchemaView, info: ArtifactInfo, tmp_dir: str | None
) -> ExportResult:
    result = ExportResult()
    stems = StemAllocator()
    labelmap = "# label:color_rgb:parts:actions\n" + "".join(f"{_one_line(n)}:::\n" for n in schema.boxes)
    sink.write("labelmap.txt", labelmap.encode("utf-8"))
    with tempfile.TemporaryFile(dir=tmp_dir) as image_set:
        for item in items:
            if not item.is_image:
                continue
            result.item_count += 1
            stem, ext = stems.allocate(item.file_name, item.item_id)
            boxes = _writable_boxes(item, schema, result)
            result.annotation_count += len(boxes)
            sink.write(f"Annotations/{stem}.xml", voc_xml(item, stem + ext, boxes))
            image_set.write(f"{stem}\n".encode())
        with sink.stream("ImageSets/Main/default.txt") as out:
            _copy(image_set, out)
    return result


# --- YOLO ----------------------------------------------------------------------------------------


def write_yolo(
    sink: ZipSink, items: Iterable[ExportItem], schema: SchemaView, info: ArtifactInfo, tmp_dir: str | None
) -> ExportResult:
    result = ExportResult()
    stems = StemAllocator()
    names = [_one_line(n) for n in schema.boxes]
    sink.write("obj.names", "".join(f"{n}\n" for n in names).encode("utf-8"))
    yaml = ["path: .", "train: train.txt", "val: train.txt", f"nc: {len(names)}", "names:"]
    yaml.extend(f"  {i}: {_dumps(n)}" for i, n in enumerate(names))
    if not names:
        yaml[-1] = "names: {}"
    sink.write("data.yaml", ("\n".join(yaml) + "\n").encode("utf-8"))
    with tempfile.TemporaryFile(dir=tmp_dir) as train:
        for item in items:
            if not item.is_image:
                continue
            result.item_count += 1
            stem, ext = stems.allocate(item.file_name, item.item_id)
            lines: list[str] = []
            for region in _writable_boxes(item, schema, result):
                if item.width <= 0 or item.height <= 0:
                    result.skipped_region_count += 1
                    continue
                lines.append(yolo_line(schema.boxes[region.label].id, region.box, item.width, item.height))
            result.annotation_count += len(lines)
            sink.write(f"labels/{stem}.txt", "".join(f"{line}\n" for line in lines).encode())
            train.write(f"images/{stem}{ext}\n".encode())
        with sink.stream("train.txt") as out:
            _copy(train, out)
    return result


# --- JSONL ---------------------------------------------------------------------------------------


def jsonl_region(region: annotations_pb2.Region) -> dict[str, Any] | None:
    """A region as JSONL writes it; None when it has no geometry or a non-finite coordinate."""
    kind = region.WhichOneof("geometry")
    if kind is None or not region_is_finite(region):
        return None
    geometry: dict[str, Any]
    if kind == "box":
        b = region.box
        geometry = {"x": b.x, "y": b.y, "width": b.width, "height": b.height}
    elif kind == "polygon":
        geometry = {"points": [[p.x, p.y] for p in region.polygon.points]}
    elif kind == "keypoints":
        geometry = {"points": [[p.x, p.y, p.visibility] for p in region.keypoints.points]}
    else:
        geometry = {"start": region.span.start, "end": region.span.end}
    return {"label": region.label, "type": kind, "geometry": geometry, "attributes": _attributes(region)}


def jsonl_record(item: ExportItem, result: ExportResult) -> dict[str, Any]:
    regions: list[dict[str, Any]] = []
    for region in item.labels.regions:
        converted = jsonl_region(region)
        if converted is None:
            result.skipped_region_count += 1
        else:
            regions.append(converted)
    result.annotation_count += len(regions)
    record: dict[str, Any] = {
        "item": item.item,
        "file_name": item.file_name,
        "media_type": MEDIA_TYPE_NAMES.get(item.media_type, "unspecified"),
        "width": item.width,
        "height": item.height,
    }
    if item.media_type == common_pb2.MEDIA_TYPE_TEXT:
        record["text"] = item.text
    record.update(
        classes=list(item.labels.classes),
        not_sure=item.labels.not_sure,
        regions=regions,
        agreement=item.agreement if finite(item.agreement) else None,
        vote_count=item.vote_count,
        schema_version=item.schema_version,
        accepted_by=item.accepted_by,
        accept_time=item.accept_time,
    )
    return record


def write_jsonl(
    sink: ZipSink, items: Iterable[ExportItem], schema: SchemaView, info: ArtifactInfo, tmp_dir: str | None
) -> ExportResult:
    result = ExportResult()
    with sink.stream("items.jsonl") as out:
        for item in items:
            result.item_count += 1
            out.write(_dumps(jsonl_record(item, result)) + "\n")
    return result


# --- artifact ------------------------------------------------------------------------------------

Writer = Callable[[ZipSink, Iterable[ExportItem], SchemaView, ArtifactInfo, "str | None"], ExportResult]
WRITERS: dict[int, Writer] = {
    export_pb2.EXPORT_FORMAT_COCO: write_coco,
    export_pb2.EXPORT_FORMAT_PASCAL_VOC: write_voc,
    export_pb2.EXPORT_FORMAT_YOLO: write_yolo,
    export_pb2.EXPORT_FORMAT_JSONL: write_jsonl,
}


def write_artifact(
    out: IO[bytes],
    items: Iterable[ExportItem],
    *,
    info: ArtifactInfo,
    schema: SchemaView,
    tmp_dir: str | None = None,
) -> ExportResult:
    """Writes the zip of ``items`` in ``info.format`` to ``out``, with ``manifest.json`` last."""
    writer = WRITERS[info.format]
    sink = ZipSink(out, info.date_time)
    try:
        result = writer(sink, items, schema, info, tmp_dir)
        result.files = dict(sink.hashes)
        manifest = {
            "format": FORMAT_NAMES[info.format],
            "project": info.project,
            "export": info.export,
            "created_time": info.created_time,
            "schema_version": schema.version,
            "counts": {
                "items": result.item_count,
                "annotations": result.annotation_count,
                "skipped_regions": result.skipped_region_count,
            },
            "files": result.files,
        }
        sink.write(
            "manifest.json", (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        )
    finally:
        sink.close()
    return result
