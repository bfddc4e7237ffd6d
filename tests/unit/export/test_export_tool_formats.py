"""CVAT XML, Label Studio JSON, CSV and YOLO segmentation writers on hand-made accepted labels."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

from annocloud.export.v1 import export_pb2
from annocloud_server.export.writers_tables import csv_cell
from export_samples import box, export, image_item, polygon, sample_items


def test_cvat_xml_has_meta_shapes_skeletons_and_tags() -> None:
    """CVAT 1.1: labels in meta (skeleton sub-labels, tags), boxes as corners, v=0 keypoints outside."""
    archive, result = export(export_pb2.EXPORT_FORMAT_CVAT, sample_items())
    root = ET.fromstring(archive.read("annotations.xml"))
    assert root.findtext("version") == "1.1"
    labels = {(label.findtext("name"), label.findtext("type")) for label in root.iter("label")}
    assert {("car", "rectangle"), ("road", "polygon"), ("person", "skeleton"), ("head", "points")} <= labels
    assert ("day", "tag") in labels
    images = root.findall("image")
    assert [(i.get("id"), i.get("name")) for i in images] == [
        ("0", "street.jpg"),
        ("1", "i2_street.JPG"),
        ("2", "empty_one_.png"),
    ]
    car = images[0].find("box")
    assert car is not None
    assert (car.get("xtl"), car.get("ytl"), car.get("xbr"), car.get("ybr"), car.get("occluded")) == (
        "10.5", "20.25", "40.5", "60.25", "1",
    )  # fmt: skip
    assert {a.get("name"): a.text for a in car.findall("attribute")} == {"color": "red"}
    assert images[0].find("polygon").get("points") == "0.0,0.0;100.0,0.0;100.0,50.0;0.0,50.0"  # type: ignore[union-attr]
    points = images[0].findall("skeleton/points")
    assert [(p.get("label"), p.get("outside"), p.get("points")) for p in points] == [
        ("head", "0", "5.0,6.0"),
        ("foot", "1", "7.0,9.0"),
    ]
    assert [t.get("label") for t in images[0].findall("tag")] == ["day"]
    assert (result.item_count, result.annotation_count, result.skipped_region_count) == (3, 4, 1)


def test_cvat_escapes_hostile_text() -> None:
    """Quotes, angle brackets and control characters in labels and attributes cannot break the XML."""
    region = box("car", 1, 1, 2, 2, note='"><evil a="\x01')
    archive, _ = export(export_pb2.EXPORT_FORMAT_CVAT, [image_item("a", 'x".jpg', [region])])
    root = ET.fromstring(archive.read("annotations.xml"))
    assert root.find("image/box/attribute").text == '"><evil a="'  # type: ignore[union-attr]


def test_label_studio_tasks_use_percentages_and_per_region_attributes() -> None:
    """Boxes are percent of the image, attributes are textarea results sharing the region id."""
    archive, result = export(export_pb2.EXPORT_FORMAT_LABEL_STUDIO, sample_items())
    tasks = json.loads(archive.read("tasks.json"))
    assert [t["data"] for t in tasks[:3]] == [
        {"image": "street.jpg"},
        {"image": "i2_street.JPG"},
        {"image": "empty_one_.png"},
    ]
    results = tasks[0]["annotations"][0]["result"]
    car = results[0]
    assert car["type"] == "rectanglelabels"
    assert car["value"] == {
        "x": 5.25, "y": 20.25, "width": 15.0, "height": 40.0, "rotation": 0, "rectanglelabels": ["car"],
    }  # fmt: skip
    assert (car["original_width"], car["original_height"]) == (200, 100)
    attributes = {r["from_name"]: r["value"]["text"] for r in results if r["type"] == "textarea"}
    assert attributes == {"color": ["red"], "occluded": ["true"]}
    keypoints = [r for r in results if r["type"] == "keypointlabels"]
    assert [(k["parentID"], k["annocloud"]) for k in keypoints] == [
        ("r2", {"index": 0, "count": 2, "visibility": 2})
    ]
    assert tasks[3]["data"] == {"text": "Paris is big", "file_name": "t1.txt"}
    assert tasks[3]["annotations"][0]["result"][0]["value"]["text"] == "Pari"
    assert result.item_count == 4


def test_csv_rows_and_formula_escaping() -> None:
    """One row per region; cells starting with = + - @ tab or CR get a leading quote."""
    hostile = box(
        "=cmd|' /C calc'!A0", 1, 1, 2, 2, note="@SUM(A1)", tab="\tx", cr="\rx", plus="+1", minus="-1"
    )
    items = [*sample_items(), image_item("h", "=evil.png", [hostile])]
    archive, result = export(export_pb2.EXPORT_FORMAT_CSV, items)
    rows = list(csv.reader(io.StringIO(archive.read("labels.csv").decode())))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["item", "file_name", "media_type"]
    assert len(body) == 4 + 1 + 1 + 1 + 1  # i1 regions (ghost kept: JSONL rules), i2, i3 empty, t1, hostile
    evil = next(r for r in body if r[0].endswith("/h"))
    assert evil[1] == "'=evil.png"
    assert evil[header.index("label")] == "'=cmd|' /C calc'!A0"
    assert json.loads(evil[header.index("attributes")])["note"] == "@SUM(A1)"
    for cell in (c for row in body for c in row):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert [csv_cell(v) for v in ("=1", "+1", "-1", "@x", "\tx", "\rx", "ok", 5)] == [
        "'=1", "'+1", "'-1", "'@x", "'\tx", "'\rx", "ok", "5",
    ]  # fmt: skip
    assert result.item_count == 5


def test_yolo_segmentation_writes_polygon_lines() -> None:
    """Polygon labels get class ids 0.. and normalised x y pairs; boxes are not segmentation."""
    items = [image_item("a", "a.png", [polygon("road", (0, 0), (100, 0), (100, 50)), box("car", 1, 1, 2, 2)])]
    archive, result = export(export_pb2.EXPORT_FORMAT_YOLO_SEGMENTATION, items)
    assert archive.read("obj.names").decode() == "road\n"
    assert (
        archive.read("obj_train_data/a.txt").decode()
        == "0 0.000000 0.000000 0.500000 0.000000 0.500000 0.500000\n"
    )
    assert (result.annotation_count, result.skipped_region_count) == (1, 1)
