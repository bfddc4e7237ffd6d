"""Record formats out: JSONL (one object per item) and CSV (one row per region), both streamed."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

from annocloud.annotations.v1 import annotations_pb2
from annocloud.common.v1 import common_pb2

from annocloud_server.export.domain import (
    MEDIA_TYPE_NAMES,
    ExportItem,
    SchemaView,
    finite,
    region_is_finite,
)
from annocloud_server.export.sink import ArtifactInfo, ExportResult, ZipSink, dumps, sorted_attributes

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
    return {
        "label": region.label,
        "type": kind,
        "geometry": geometry,
        "attributes": sorted_attributes(region),
    }


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
            result.add_item(item.split)
            record = jsonl_record(item, result)
            if info.splits:
                record["split"] = item.split
            out.write(dumps(record) + "\n")
    return result


# --- CSV -----------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "item",
    "file_name",
    "media_type",
    "image_width",
    "image_height",
    "classes",
    "not_sure",
    "region_index",
    "label",
    "type",
    "x",
    "y",
    "width",
    "height",
    "points",
    "span_start",
    "span_end",
    "attributes",
)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A cell as text; one a spreadsheet would run as a formula gets a leading single quote."""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _geometry_cells(region: dict[str, Any]) -> list[object]:
    geometry = region["geometry"]
    kind = region["type"]
    box = [geometry[k] for k in ("x", "y", "width", "height")] if kind == "box" else ["", "", "", ""]
    points = dumps(geometry["points"]) if kind in ("polygon", "keypoints") else ""
    span = [geometry["start"], geometry["end"]] if kind == "span" else ["", ""]
    return [*box, points, *span]


def csv_rows(item: ExportItem, result: ExportResult) -> list[list[str]]:
    """One row per region (one row with empty region cells for an item without regions)."""
    record = jsonl_record(item, result)
    head: list[object] = [
        record["item"],
        record["file_name"],
        record["media_type"],
        record["width"],
        record["height"],
        dumps(record["classes"]),
        "true" if record["not_sure"] else "false",
    ]
    if not record["regions"]:
        return [[csv_cell(c) for c in head + [""] * (len(CSV_COLUMNS) - len(head))]]
    rows = []
    for index, region in enumerate(record["regions"]):
        cells = [*head, index, region["label"], region["type"], *_geometry_cells(region)]
        cells.append(dumps(region["attributes"]))
        rows.append([csv_cell(c) for c in cells])
    return rows


def write_csv(
    sink: ZipSink, items: Iterable[ExportItem], schema: SchemaView, info: ArtifactInfo, tmp_dir: str | None
) -> ExportResult:
    result = ExportResult()
    with sink.stream("labels.csv") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow((*CSV_COLUMNS, "split") if info.splits else CSV_COLUMNS)
        for item in items:
            result.add_item(item.split)
            rows = csv_rows(item, result)
            writer.writerows([[*row, item.split] for row in rows] if info.splits else rows)
    return result
