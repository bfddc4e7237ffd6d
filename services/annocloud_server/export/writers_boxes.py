"""Detection formats out: COCO JSON, Pascal VOC XML, YOLO txt (detection and segmentation).

Every writer consumes its items once, keeping only the stems already used in memory; sections
that must come after the streamed part (COCO annotations, VOC / YOLO image lists) are spooled to
a temporary file first. The README documents each mapping.
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

from annocloud.annotations.v1 import annotations_pb2

from annocloud_server.export.domain import (
    Category,
    ExportItem,
    SchemaView,
    StemAllocator,
    geometry_matches,
    region_is_finite,
    truthy,
)
from annocloud_server.export.sink import (
    ArtifactInfo,
    ExportResult,
    SplitLists,
    ZipSink,
    copy_spool,
    dumps,
    one_line,
    sorted_attributes,
    xml_text,
)
from annocloud_server.formats.geometry import (
    box_xywh,
    keypoints_bbox,
    keypoints_flat,
    polygon_area,
    polygon_bbox,
    polygon_flat,
    yolo_line,
)

# --- COCO ----------------------------------------------------------------------------------------


def coco_annotation(region: annotations_pb2.Region, schema: SchemaView) -> dict[str, Any] | None:
    """The COCO annotation of a region (without id / image_id); None when it cannot be written."""
    category = schema.coco.get(region.label)
    if category is None or not region_is_finite(region) or not geometry_matches(category, region):
        return None
    ann: dict[str, Any] = {"category_id": category.id, "iscrowd": 0, "segmentation": []}
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
        ann["attributes"] = sorted_attributes(region)
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
        out.write(f'{{"info":{dumps(header)},"licenses":[],"categories":{dumps(_coco_categories(schema))}')
        out.write(',"images":[')
        for item in items:
            if not item.is_image:
                continue
            result.add_item(item.split)
            stem, ext = stems.allocate_item(item)
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
            if info.splits:
                image["annocloud"]["split"] = item.split  # type: ignore[index]
            out.write(("," if result.item_count > 1 else "") + dumps(image))
            for region in item.labels.regions:
                ann = coco_annotation(region, schema)
                if ann is None:
                    result.skipped_region_count += 1
                    continue
                result.annotation_count += 1
                ann = {"id": result.annotation_count, "image_id": result.item_count, **ann}
                prefix = "," if result.annotation_count > 1 else ""
                spool.write((prefix + dumps(ann)).encode("utf-8"))
        out.write('],"annotations":[')
        copy_spool(spool, out)
        out.write("]}")
    return result


# --- Pascal VOC ----------------------------------------------------------------------------------

VOC_FLAGS = ("truncated", "difficult", "occluded")
"""Attributes written as VOC's 0/1 elements (1 when true-like) instead of in <attributes>."""


def _sub(parent: ET.Element, tag: str, text: object) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = xml_text(text)
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
        _sub(obj, "pose", region.attributes.get("pose") or "Unspecified")
        for flag in VOC_FLAGS:
            _sub(obj, flag, 1 if truthy(region.attributes.get(flag, "")) else 0)
        box = region.box
        bndbox = ET.SubElement(obj, "bndbox")
        _sub(bndbox, "xmin", repr(float(box.x)))
        _sub(bndbox, "ymin", repr(float(box.y)))
        _sub(bndbox, "xmax", repr(float(box.x + box.width)))
        _sub(bndbox, "ymax", repr(float(box.y + box.height)))
        extra = {k: v for k, v in sorted_attributes(region).items() if k not in (*VOC_FLAGS, "pose")}
        if extra:
            attributes = ET.SubElement(obj, "attributes")
            for key, value in extra.items():
                attribute = ET.SubElement(attributes, "attribute")
                _sub(attribute, "name", key)
                _sub(attribute, "value", value)
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def writable_regions(
    item: ExportItem, labels: dict[str, Category], result: ExportResult
) -> list[annotations_pb2.Region]:
    """Regions whose label is in ``labels`` with matching finite geometry; the rest count skipped."""
    regions: list[annotations_pb2.Region] = []
    for region in item.labels.regions:
        category = labels.get(region.label)
        if category is None or not region_is_finite(region) or not geometry_matches(category, region):
            result.skipped_region_count += 1
        else:
            regions.append(region)
    return regions


def write_voc(
    sink: ZipSink, items: Iterable[ExportItem], schema: SchemaView, info: ArtifactInfo, tmp_dir: str | None
) -> ExportResult:
    result = ExportResult()
    stems = StemAllocator()
    labelmap = "# label:color_rgb:parts:actions\n" + "".join(f"{one_line(n)}:::\n" for n in schema.boxes)
    sink.write("labelmap.txt", labelmap.encode("utf-8"))
    with tempfile.TemporaryFile(dir=tmp_dir) as image_set, SplitLists(info, tmp_dir) as split_sets:
        for item in items:
            if not item.is_image:
                continue
            result.add_item(item.split)
            stem, ext = stems.allocate_item(item)
            boxes = writable_regions(item, schema.boxes, result)
            result.annotation_count += len(boxes)
            sink.write(f"Annotations/{stem}.xml", voc_xml(item, stem + ext, boxes))
            image_set.write(f"{stem}\n".encode())
            split_sets.add(item.split, f"{stem}\n")
        with sink.stream("ImageSets/Main/default.txt") as out:
            copy_spool(image_set, out)
        split_sets.write(sink, "ImageSets/Main/{}.txt")
    return result


# --- YOLO ----------------------------------------------------------------------------------------

YOLO_FOLDER = "obj_train_data"


def yolo_polygon_line(class_id: int, polygon: annotations_pb2.Polygon, width: int, height: int) -> str:
    """``class x1 y1 x2 y2 ...`` normalised by the image size, 6 decimals."""
    coords = " ".join(f"{p.x / width:.6f} {p.y / height:.6f}" for p in polygon.points)
    return f"{class_id} {coords}"


def _write_yolo(
    sink: ZipSink,
    items: Iterable[ExportItem],
    labels: dict[str, Category],
    info: ArtifactInfo,
    tmp_dir: str | None,
) -> ExportResult:
    result = ExportResult()
    stems = StemAllocator()
    names = [one_line(n) for n in labels]
    sink.write("obj.names", "".join(f"{n}\n" for n in names).encode("utf-8"))
    lists = "train = train.txt\n"
    yaml = ["path: .", "train: train.txt", "val: train.txt"]
    if info.splits:
        # train.txt stays every image (what a reader without splits expects); the split lists sit beside it.
        lists = "train = train_split.txt\nvalid = val.txt\ntest = test.txt\n"
        yaml = ["path: .", "train: train_split.txt", "val: val.txt", "test: test.txt"]
    sink.write(
        "obj.data",
        f"classes = {len(names)}\n{lists}names = obj.names\nbackup = backup/\n".encode(),
    )
    yaml.extend([f"nc: {len(names)}", "names:"])
    yaml.extend(f"  {i}: {dumps(n)}" for i, n in enumerate(names))
    if not names:
        yaml[-1] = "names: {}"
    sink.write("data.yaml", ("\n".join(yaml) + "\n").encode("utf-8"))
    with (
        tempfile.TemporaryFile(dir=tmp_dir) as train,
        tempfile.TemporaryFile(dir=tmp_dir) as meta,
        SplitLists(info, tmp_dir) as split_lists,
    ):
        for item in items:
            if not item.is_image:
                continue
            result.add_item(item.split)
            stem, ext = stems.allocate_item(item)
            lines: list[str] = []
            for region in writable_regions(item, labels, result):
                if item.width <= 0 or item.height <= 0:
                    result.skipped_region_count += 1
                    continue
                class_id = labels[region.label].id
                if region.HasField("box"):
                    lines.append(yolo_line(class_id, region.box, item.width, item.height))
                else:
                    lines.append(yolo_polygon_line(class_id, region.polygon, item.width, item.height))
            result.annotation_count += len(lines)
            sink.write(f"{YOLO_FOLDER}/{stem}.txt", "".join(f"{line}\n" for line in lines).encode())
            train.write(f"./{YOLO_FOLDER}/{stem}{ext}\n".encode())
            meta.write(f"{stem} {item.height} {item.width}\n".encode())
            split_lists.add(item.split, f"./{YOLO_FOLDER}/{stem}{ext}\n")
        with sink.stream("train.txt") as out:
            copy_spool(train, out)
        with sink.stream("images.meta") as out:
            copy_spool(meta, out)
        split_lists.write(sink, "{}.txt", rename={"train": "train_split"})
    return result


def write_yolo(
    sink: ZipSink, items: Iterable[ExportItem], schema: SchemaView, info: ArtifactInfo, tmp_dir: str | None
) -> ExportResult:
    return _write_yolo(sink, items, schema.boxes, info, tmp_dir)


def write_yolo_segmentation(
    sink: ZipSink, items: Iterable[ExportItem], schema: SchemaView, info: ArtifactInfo, tmp_dir: str | None
) -> ExportResult:
    return _write_yolo(sink, items, schema.polygons, info, tmp_dir)
