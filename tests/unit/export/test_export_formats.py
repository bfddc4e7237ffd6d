"""Format writers on hand-made accepted labels: COCO, Pascal VOC, YOLO, JSONL and the manifest."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from annocloud.export.v1 import export_pb2
from export_samples import FORMATS, box, export, image_item, sample_items, sample_schema
from pycocotools.coco import COCO


def _coco(tmp_path: Path, items: list, schema=None) -> tuple[COCO, dict]:  # type: ignore[type-arg]
    archive, _ = export(export_pb2.EXPORT_FORMAT_COCO, items, schema)
    path = tmp_path / "annotations.json"
    path.write_bytes(archive.read("annotations.json"))
    return COCO(str(path)), json.loads(path.read_bytes())


def test_coco_loads_in_pycocotools_with_exact_counts(tmp_path: Path) -> None:
    """COCO output loads in pycocotools with 3 images, 4 annotations, 4 categories (text items skipped)."""
    coco, _ = _coco(tmp_path, sample_items())
    assert len(coco.getImgIds()) == 3
    assert len(coco.getAnnIds()) == 4
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["car", "road", "person", "sign"]
    assert coco.getCatIds() == [1, 2, 3, 4]


def test_coco_geometry_mappings(tmp_path: Path) -> None:
    """Boxes, polygons (bounds + shoelace area) and keypoints (v=0 zeroed, bounds of labelled) map exactly."""
    coco, data = _coco(tmp_path, sample_items())
    anns = {a["category_id"]: a for a in data["annotations"]}
    car = anns[1]
    assert car["bbox"] == [10.5, 20.25, 30.0, 40.0]
    assert car["area"] == 1200.0
    assert car["iscrowd"] == 0
    assert car["attributes"] == {"color": "red", "occluded": "true"}
    road = anns[2]
    assert road["segmentation"] == [[0, 0, 100, 0, 100, 50, 0, 50]]
    assert road["bbox"] == [0, 0, 100, 50]
    assert road["area"] == 5000.0
    person = anns[3]
    assert person["keypoints"] == [5.0, 6.0, 2, 0, 0, 0]
    assert person["num_keypoints"] == 1
    assert person["bbox"] == [5.0, 6.0, 0.0, 0.0]
    assert [a["id"] for a in data["annotations"]] == [1, 2, 3, 4]
    assert coco.getAnnIds(imgIds=[1]) == [1, 2, 3]
    cats = {c["name"]: c for c in data["categories"]}
    assert cats["person"]["keypoints"] == ["head", "foot"]
    assert cats["person"]["skeleton"] == []
    assert "keypoints" not in cats["car"]


def test_coco_images_carry_unique_safe_file_names_and_item_facts(tmp_path: Path) -> None:
    """Images get ids 1.., unique sanitised file names and the annocloud item/classes/not_sure block."""
    _, data = _coco(tmp_path, sample_items())
    images = data["images"]
    assert [i["id"] for i in images] == [1, 2, 3]
    assert [i["file_name"] for i in images] == ["street.jpg", "i2_street.JPG", "empty_one_.png"]
    assert images[0]["annocloud"] == {"item": "datasets/d1/items/i1", "classes": ["day"], "not_sure": False}
    assert (images[0]["width"], images[0]["height"]) == (200, 100)


def test_coco_polygon_area_with_negative_orientation(tmp_path: Path) -> None:
    """A clockwise triangle still gets a positive shoelace area."""
    from export_samples import polygon

    _, data = _coco(tmp_path, [image_item("a", "a.png", [polygon("road", (0, 0), (0, 10), (10, 0))])])
    assert data["annotations"][0]["area"] == 50.0


def test_yolo_lines_are_normalised_with_six_decimals() -> None:
    """YOLO labels hold `class cx cy w h` normalised, class ids in schema box order, darknet layout + sizes."""
    archive, result = export(export_pb2.EXPORT_FORMAT_YOLO, sample_items())
    assert archive.read("obj_train_data/street.txt").decode() == "0 0.127500 0.402500 0.150000 0.400000\n"
    assert archive.read("obj_train_data/i2_street.txt").decode() == "1 0.500000 0.500000 1.000000 1.000000\n"
    assert archive.read("obj_train_data/empty_one_.txt") == b""
    assert archive.read("obj.names").decode() == "car\nsign\n"
    assert archive.read("train.txt").decode().splitlines() == [
        "./obj_train_data/street.jpg",
        "./obj_train_data/i2_street.JPG",
        "./obj_train_data/empty_one_.png",
    ]
    assert archive.read("images.meta").decode().splitlines()[0] == "street 100 200"
    assert "classes = 2" in archive.read("obj.data").decode()
    data_yaml = archive.read("data.yaml").decode()
    assert "nc: 2" in data_yaml
    assert '  0: "car"' in data_yaml
    assert '  1: "sign"' in data_yaml
    assert (result.item_count, result.annotation_count) == (3, 2)


def test_yolo_skips_boxes_of_images_without_size() -> None:
    """An image without a size cannot be normalised: its label file is empty and the box counts as skipped."""
    archive, result = export(
        export_pb2.EXPORT_FORMAT_YOLO, [image_item("a", "a.png", [box("car", 1, 1, 2, 2)], width=0, height=0)]
    )
    assert archive.read("obj_train_data/a.txt") == b""
    assert (result.annotation_count, result.skipped_region_count) == (0, 1)


def test_voc_parses_and_matches_boxes() -> None:
    """VOC XML parses with xml.etree; bndbox is x, y, x+w, y+h as repr floats; occluded and attributes map."""
    archive, result = export(export_pb2.EXPORT_FORMAT_PASCAL_VOC, sample_items())
    root = ET.fromstring(archive.read("Annotations/street.xml"))
    assert root.findtext("filename") == "street.jpg"
    assert root.findtext("size/width") == "200"
    assert root.findtext("size/height") == "100"
    assert root.findtext("size/depth") == "3"
    assert root.findtext("segmented") == "0"
    objects = root.findall("object")
    assert len(objects) == 1
    car = objects[0]
    assert car.findtext("name") == "car"
    assert car.findtext("pose") == "Unspecified"
    assert car.findtext("occluded") == "1"
    assert [car.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")] == [
        "10.5",
        "20.25",
        "40.5",
        "60.25",
    ]
    assert {a.findtext("name"): a.findtext("value") for a in car.findall("attributes/attribute")} == {
        "color": "red"
    }
    sign = ET.fromstring(archive.read("Annotations/i2_street.xml")).find("object")
    assert sign is not None
    assert sign.findtext("occluded") == "0"
    assert sign.find("attributes") is None
    assert archive.read("ImageSets/Main/default.txt").decode().splitlines() == [
        "street",
        "i2_street",
        "empty_one_",
    ]
    assert archive.read("labelmap.txt").decode().splitlines()[1:] == ["car:::", "sign:::"]
    assert (result.item_count, result.annotation_count, result.skipped_region_count) == (3, 2, 3)


def test_voc_floats_are_lossless() -> None:
    """A coordinate with many digits survives the XML round trip exactly."""
    value = 0.1 + 0.2
    archive, _ = export(
        export_pb2.EXPORT_FORMAT_PASCAL_VOC, [image_item("a", "a.png", [box("car", value, 1, 2, 3)])]
    )
    root = ET.fromstring(archive.read("Annotations/a.xml"))
    assert float(root.findtext("object/bndbox/xmin") or "nan") == value


def test_jsonl_round_trips_every_item() -> None:
    """JSONL has one parsable object per item (text items included) with every region and the vote facts."""
    archive, result = export(export_pb2.EXPORT_FORMAT_JSONL, sample_items())
    records = [json.loads(line) for line in archive.read("items.jsonl").decode().splitlines()]
    assert [r["item"] for r in records] == [f"datasets/d1/items/{i}" for i in ("i1", "i2", "i3", "t1")]
    first = records[0]
    assert first["regions"][0] == {
        "label": "car",
        "type": "box",
        "geometry": {"x": 10.5, "y": 20.25, "width": 30.0, "height": 40.0},
        "attributes": {"color": "red", "occluded": "true"},
    }
    assert first["regions"][1]["geometry"] == {"points": [[0, 0], [100, 0], [100, 50], [0, 50]]}
    assert first["regions"][2]["geometry"] == {"points": [[5.0, 6.0, 2], [7.0, 9.0, 0]]}
    assert (first["agreement"], first["vote_count"], first["schema_version"], first["accepted_by"]) == (
        0.9,
        3,
        2,
        "auto",
    )
    assert first["file_name"] == "street.jpg"
    assert "text" not in first
    text = records[3]
    assert text["media_type"] == "text"
    assert text["text"] == "Paris is big"
    assert text["not_sure"] is True
    assert text["regions"] == [
        {"label": "entity", "type": "span", "geometry": {"start": 0, "end": 4}, "attributes": {}}
    ]
    assert (result.item_count, result.annotation_count) == (4, 6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_manifest_hashes_every_other_file(fmt: int) -> None:
    """manifest.json names the format, project, export, counts and the sha256 and size of every other file."""
    archive, result = export(fmt, sample_items())
    manifest = json.loads(archive.read("manifest.json"))
    others = sorted(n for n in archive.namelist() if n != "manifest.json")
    assert sorted(manifest["files"]) == others
    for name in others:
        data = archive.read(name)
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert manifest["project"] == "projects/p1"
    assert manifest["export"] == "projects/p1/exports/e1"
    assert manifest["schema_version"] == 2
    assert manifest["counts"]["items"] == result.item_count
    assert manifest["counts"]["annotations"] == result.annotation_count


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_export_gives_valid_files(fmt: int, tmp_path: Path) -> None:
    """With no accepted items every format still writes its files, valid and empty."""
    archive, result = export(fmt, [])
    assert archive.testzip() is None
    assert (result.item_count, result.annotation_count) == (0, 0)
    if fmt == export_pb2.EXPORT_FORMAT_COCO:
        path = tmp_path / "a.json"
        path.write_bytes(archive.read("annotations.json"))
        coco = COCO(str(path))
        assert coco.getImgIds() == []
        assert len(coco.getCatIds()) == 4
    elif fmt == export_pb2.EXPORT_FORMAT_JSONL:
        assert archive.read("items.jsonl") == b""
    elif fmt in (export_pb2.EXPORT_FORMAT_YOLO, export_pb2.EXPORT_FORMAT_YOLO_SEGMENTATION):
        assert archive.read("train.txt") == b""
    elif fmt == export_pb2.EXPORT_FORMAT_CVAT:
        root = ET.fromstring(archive.read("annotations.xml"))
        assert root.findall("image") == []
        assert root.findtext("version") == "1.1"
    elif fmt == export_pb2.EXPORT_FORMAT_LABEL_STUDIO:
        assert json.loads(archive.read("tasks.json")) == []
    elif fmt == export_pb2.EXPORT_FORMAT_CSV:
        assert archive.read("labels.csv").decode().count("\r\n") == 1
    else:
        assert archive.read("ImageSets/Main/default.txt") == b""


def test_export_without_schema_has_no_categories(tmp_path: Path) -> None:
    """Without any schema seen, COCO has no categories and every region is counted skipped."""
    from annocloud.tasks.v1 import tasks_pb2

    archive, result = export(export_pb2.EXPORT_FORMAT_COCO, sample_items(), tasks_pb2.LabelSchema())
    data = json.loads(archive.read("annotations.json"))
    assert data["categories"] == []
    assert data["annotations"] == []
    assert result.skipped_region_count == 5


def test_nan_coordinates_are_skipped_not_written() -> None:
    """A region with a NaN coordinate is skipped so every JSON file stays valid."""
    archive, result = export(
        export_pb2.EXPORT_FORMAT_JSONL, [image_item("a", "a.png", [box("car", float("nan"), 0, 1, 1)])]
    )
    record = json.loads(archive.read("items.jsonl"))
    assert record["regions"] == []
    assert result.skipped_region_count == 1


def test_schema_order_decides_ids() -> None:
    """Categories follow the schema's object order: a later schema reorders YOLO class ids."""
    schema = sample_schema()
    schema.objects.reverse()
    archive, _ = export(export_pb2.EXPORT_FORMAT_YOLO, sample_items(), schema)
    assert archive.read("obj.names").decode() == "sign\ncar\n"
    assert archive.read("obj_train_data/street.txt").decode().startswith("1 ")
