"""Labeling-tool formats out: CVAT for images 1.1 XML and Label Studio JSON, both streamed.

CVAT takes the regions COCO takes (schema labels with matching geometry); Label Studio, like
JSONL, takes every finite region its item can show (percentages need the image size).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from annocloud.annotations.v1 import annotations_pb2
from annocloud.tasks.v1 import tasks_pb2

from annocloud_server.export.domain import ExportItem, SchemaView, StemAllocator, region_is_finite, truthy
from annocloud_server.export.sink import ArtifactInfo, ExportResult, ZipSink, dumps, xml_text
from annocloud_server.export.writers_boxes import writable_regions

# --- CVAT ----------------------------------------------------------------------------------------

CVAT_TYPES: dict[int, str] = {
    tasks_pb2.OBJECT_KIND_BOX: "rectangle",
    tasks_pb2.OBJECT_KIND_POLYGON: "polygon",
    tasks_pb2.OBJECT_KIND_KEYPOINTS: "skeleton",
}
SHAPE_FLAGS = ("occluded", "z_order", "group_id")
"""Attributes CVAT keeps as shape attributes rather than <attribute> children."""
_INTEGER = re.compile(r"^-?\d{1,9}$")


def _attr(value: object) -> str:
    return quoteattr(xml_text(value))


def _text(value: object) -> str:
    return escape(xml_text(value))


def _num(value: float) -> str:
    return repr(float(value))


def _cvat_meta(schema: SchemaView, info: ArtifactInfo) -> str:
    labels: list[str] = []
    for category in schema.coco.values():
        attributes = "".join(
            f"<attribute><name>{_text(a)}</name><mutable>False</mutable><input_type>text</input_type>"
            "<default_value></default_value><values></values></attribute>"
            for a in category.attributes
            if a not in SHAPE_FLAGS
        )
        labels.append(
            f"<label><name>{_text(category.name)}</name><type>{CVAT_TYPES[category.kind]}</type>"
            f"<attributes>{attributes}</attributes></label>"
        )
        labels.extend(
            f"<label><name>{_text(point)}</name><type>points</type><parent>{_text(category.name)}</parent>"
            "<attributes></attributes></label>"
            for point in category.keypoint_names
        )
    labels.extend(
        f"<label><name>{_text(c)}</name><type>tag</type><attributes></attributes></label>"
        for c in schema.classes
    )
    return (
        f"<meta><task><name>{_text(info.export)}</name><mode>annotation</mode>"
        f"<labels>{''.join(labels)}</labels></task><dumped>{_text(info.created_time)}</dumped></meta>"
    )


def _shape_head(tag: str, region: annotations_pb2.Region) -> tuple[str, str]:
    """The opening of a shape element and its <attribute> children."""
    attributes = dict(sorted(region.attributes.items()))
    occluded = "1" if truthy(attributes.get("occluded", "")) else "0"
    head = f'<{tag} label={_attr(region.label)} source="manual" occluded="{occluded}"'
    children = []
    for flag in ("z_order", "group_id"):
        value = attributes.get(flag)
        if value is not None and _INTEGER.match(value):
            head += f" {flag}={_attr(value)}"
        elif value is not None:
            children.append((flag, value))
    if "z_order" not in attributes or not _INTEGER.match(attributes["z_order"]):
        head += ' z_order="0"'
    children.extend((k, v) for k, v in attributes.items() if k not in SHAPE_FLAGS)
    body = "".join(f"<attribute name={_attr(k)}>{_text(v)}</attribute>" for k, v in children)
    return head, body


def cvat_shape(region: annotations_pb2.Region, schema: SchemaView) -> str:
    """One CVAT shape element of a writable region."""
    kind = region.WhichOneof("geometry")
    if kind == "box":
        b = region.box
        head, body = _shape_head("box", region)
        corners = (
            f' xtl="{_num(b.x)}" ytl="{_num(b.y)}" xbr="{_num(b.x + b.width)}" ybr="{_num(b.y + b.height)}"'
        )
        return f"{head}{corners}>{body}</box>"
    if kind == "polygon":
        head, body = _shape_head("polygon", region)
        points = ";".join(f"{_num(p.x)},{_num(p.y)}" for p in region.polygon.points)
        return f'{head} points="{points}">{body}</polygon>'
    head, body = _shape_head("skeleton", region)
    names = schema.coco[region.label].keypoint_names
    children = []
    for name, p in zip(names, region.keypoints.points, strict=True):
        outside = "1" if p.visibility == 0 else "0"
        occluded = "1" if p.visibility == 1 else "0"
        children.append(
            f'<points label={_attr(name)} source="manual" outside="{outside}" occluded="{occluded}" '
            f'points="{_num(p.x)},{_num(p.y)}"/>'
        )
    return f"{head}>{''.join(children)}{body}</skeleton>"


def write_cvat(
    sink: ZipSink, items: Iterable[ExportItem], schema: SchemaView, info: ArtifactInfo, tmp_dir: str | None
) -> ExportResult:
    result = ExportResult()
    stems = StemAllocator()
    with sink.stream("annotations.xml") as out:
        out.write('<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>')
        out.write(_cvat_meta(schema, info) + "\n")
        for item in items:
            if not item.is_image:
                continue
            stem, ext = stems.allocate_item(item)
            regions = writable_regions(item, schema.coco, result)
            subset = f" subset={_attr(item.split)}" if info.splits else ""
            out.write(
                f'<image id="{result.item_count}" name={_attr(stem + ext)}{subset} '
                f'width="{item.width}" height="{item.height}">'
            )
            result.add_item(item.split)
            result.annotation_count += len(regions)
            out.write("".join(cvat_shape(region, schema) for region in regions))
            out.write("".join(f'<tag label={_attr(c)} source="manual"/>' for c in item.labels.classes))
            out.write("</image>\n")
        out.write("</annotations>\n")
    return result


# --- Label Studio --------------------------------------------------------------------------------


def _percent(value: float, size: int) -> float:
    return value / size * 100.0


def _image_results(rid: str, region: annotations_pb2.Region, item: ExportItem) -> list[dict[str, Any]]:
    base = {
        "to_name": "image",
        "original_width": item.width,
        "original_height": item.height,
        "image_rotation": 0,
    }
    kind = region.WhichOneof("geometry")
    w, h = item.width, item.height
    if kind == "box":
        b = region.box
        value: dict[str, Any] = {"x": _percent(b.x, w), "y": _percent(b.y, h), "width": _percent(b.width, w)}
        value.update(height=_percent(b.height, h), rotation=0, rectanglelabels=[region.label])
        return [{"id": rid, "type": "rectanglelabels", "from_name": "label", **base, "value": value}]
    if kind == "polygon":
        points = [[_percent(p.x, w), _percent(p.y, h)] for p in region.polygon.points]
        value = {"points": points, "closed": True, "polygonlabels": [region.label]}
        return [{"id": rid, "type": "polygonlabels", "from_name": "polygon", **base, "value": value}]
    count = len(region.keypoints.points)
    return [
        {
            "id": f"{rid}-{i}",
            "parentID": rid,
            "type": "keypointlabels",
            "from_name": "keypoint",
            **base,
            "value": {
                "x": _percent(p.x, w),
                "y": _percent(p.y, h),
                "width": 0.5,
                "keypointlabels": [region.label],
            },
            "annocloud": {"index": i, "count": count, "visibility": p.visibility},
        }
        for i, p in enumerate(region.keypoints.points)
        if p.visibility > 0
    ]


def label_studio_results(item: ExportItem, result: ExportResult) -> Iterator[dict[str, Any]]:
    """The result list of one task: regions, their attributes, then classes and not_sure."""
    to_name = "image" if item.is_image else "text"
    for index, region in enumerate(item.labels.regions):
        kind = region.WhichOneof("geometry")
        rid = f"r{index}"
        if kind is None or not region_is_finite(region) or (kind == "span") == item.is_image:
            result.skipped_region_count += 1
            continue
        if kind == "span":
            s = region.span
            value = {
                "start": s.start,
                "end": s.end,
                "text": item.text[s.start : s.end],
                "labels": [region.label],
            }
            shapes = [{"id": rid, "type": "labels", "from_name": "span", "to_name": "text", "value": value}]
        elif item.width > 0 and item.height > 0:
            shapes = _image_results(rid, region, item)
        else:
            shapes = []
        if not shapes:
            result.skipped_region_count += 1
            continue
        result.annotation_count += 1
        yield from shapes
        for key, text in sorted(region.attributes.items()):
            yield {
                "id": rid,
                "type": "textarea",
                "from_name": key,
                "to_name": to_name,
                "value": {"text": [text]},
            }
    if item.labels.classes:
        value = {"choices": list(item.labels.classes)}
        yield {"id": "classes", "type": "choices", "from_name": "class", "to_name": to_name, "value": value}
    if item.labels.not_sure:
        value = {"choices": ["true"]}
        yield {
            "id": "not_sure",
            "type": "choices",
            "from_name": "not_sure",
            "to_name": to_name,
            "value": value,
        }


def write_label_studio(
    sink: ZipSink, items: Iterable[ExportItem], schema: SchemaView, info: ArtifactInfo, tmp_dir: str | None
) -> ExportResult:
    result = ExportResult()
    stems = StemAllocator()
    with sink.stream("tasks.json") as out:
        out.write("[")
        for item in items:
            result.add_item(item.split)
            stem, ext = stems.allocate_item(item)
            data = {"image": stem + ext} if item.is_image else {"text": item.text, "file_name": stem + ext}
            annotation = {"id": result.item_count, "result": list(label_studio_results(item, result))}
            task = {
                "id": result.item_count,
                "data": data,
                "annotations": [annotation],
                "meta": {"item": item.item, "split": item.split} if info.splits else {"item": item.item},
            }
            out.write(("," if result.item_count > 1 else "") + "\n" + dumps(task))
        out.write("\n]\n")
    return result
