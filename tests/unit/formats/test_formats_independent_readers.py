"""Independent readers agree: pycocotools and Datumaro load our exports, and we import Datumaro's."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.export.v1 import export_pb2
from annocloud_server.formats.importers import ImportFormat
from annocloud_server.formats.safety import SafeZip
from datumaro.components.annotation import AnnotationType, Bbox, Polygon
from datumaro.components.dataset import Dataset
from datumaro.components.dataset_base import DatasetItem
from datumaro.components.media import Image
from formats_support import export_zip, image, read_all
from pycocotools.coco import COCO

E = export_pb2


def _regions() -> list[ann.Region]:
    triangle = ann.Polygon(points=[ann.Point(x=0, y=0), ann.Point(x=100, y=0), ann.Point(x=100, y=50)])
    return [
        ann.Region(label="car", box=ann.Box(x=10.5, y=20, width=30, height=40), attributes={"color": "red"}),
        ann.Region(label="road", polygon=triangle),
        ann.Region(label="truck", box=ann.Box(x=1, y=2, width=3, height=4)),
    ]


ITEMS = [image("a.jpg", _regions(), classes=["day"]), image("b.jpg", [_regions()[2]])]


def _extract(fmt: int, tmp_path: Path) -> Path:
    archive = export_zip(fmt, ITEMS)
    root = tmp_path / E.ExportFormat.Name(fmt)
    for name in archive.names():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(name, max_bytes=1 << 24))
    return root


def _boxes(dataset: Dataset) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    labels = dataset.categories()[AnnotationType.label]
    found: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    for item in dataset:
        boxes = [
            (labels[a.label].name, tuple(round(v, 6) for v in a.get_bbox()))
            for a in item.annotations
            if a.type == AnnotationType.bbox
        ]
        found[item.id] = sorted(boxes)
    return found


EXPECTED_BOXES = {
    "a": [("car", (10.5, 20.0, 30.0, 40.0)), ("truck", (1.0, 2.0, 3.0, 4.0))],
    "b": [("truck", (1.0, 2.0, 3.0, 4.0))],
}


def test_pycocotools_loads_our_coco_with_masks(tmp_path: Path) -> None:
    """pycocotools indexes every image, annotation and keypoint category, and rasterises our polygons."""
    root = _extract(E.EXPORT_FORMAT_COCO, tmp_path)
    coco = COCO(str(root / "annotations.json"))
    assert len(coco.getImgIds()) == 2
    assert len(coco.getAnnIds()) == 4
    road = coco.loadAnns(coco.getAnnIds(catIds=coco.getCatIds(catNms=["road"])))[0]
    assert coco.annToMask(road).sum() == pytest.approx(2500, rel=0.05)
    assert coco.loadCats(coco.getCatIds(catNms=["person"]))[0]["keypoints"] == ["head", "hand", "foot"]


@pytest.mark.parametrize(
    ("fmt", "datumaro_format"),
    [
        (E.EXPORT_FORMAT_COCO, "coco_instances"),
        (E.EXPORT_FORMAT_PASCAL_VOC, "voc_detection"),
        (E.EXPORT_FORMAT_YOLO, "yolo"),
        (E.EXPORT_FORMAT_CVAT, "cvat"),
    ],
)
def test_datumaro_reads_our_exports(fmt: int, datumaro_format: str, tmp_path: Path) -> None:
    """Datumaro imports our COCO, VOC, YOLO and CVAT artifacts and finds exactly our boxes."""
    root = _extract(fmt, tmp_path)
    if fmt == E.EXPORT_FORMAT_COCO:
        (root / "annotations.json").rename(root / "instances_default.json")
        root = root / "instances_default.json"
    if fmt == E.EXPORT_FORMAT_CVAT:
        root = root / "annotations.xml"
    dataset = Dataset.import_from(str(root), datumaro_format)
    expected = {key: list(boxes) for key, boxes in EXPECTED_BOXES.items()}
    if fmt == E.EXPORT_FORMAT_COCO:  # Datumaro adds the bbox of every COCO polygon as a Bbox too
        expected["a"] = sorted([*expected["a"], ("road", (0.0, 0.0, 100.0, 50.0))])
    assert _boxes(dataset) == expected
    if fmt in (E.EXPORT_FORMAT_COCO, E.EXPORT_FORMAT_CVAT):
        polygons = [a for item in dataset for a in item.annotations if a.type == AnnotationType.polygon]
        assert [list(p.points) for p in polygons] == [[0, 0, 100, 0, 100, 50]]


def _datumaro_dataset() -> Dataset:
    picture = Image(data=np.zeros((50, 100, 3), dtype=np.uint8))
    annotations = [
        Bbox(1.5, 2, 10, 20, label=0, attributes={"occluded": True, "color": "red"}, z_order=1, group=3),
        Polygon([0, 0, 10, 0, 10, 10], label=1),
    ]
    item = DatasetItem(id="a", subset="default", media=picture, annotations=annotations)
    return Dataset.from_iterable([item], categories=["car", "road"])


def _zip_dir(root: Path) -> SafeZip:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())
    buffer.seek(0)
    return SafeZip(buffer)


@pytest.mark.parametrize(
    ("datumaro_format", "ours"),
    [
        ("coco_instances", ImportFormat.COCO),
        ("voc", ImportFormat.PASCAL_VOC),
        ("yolo", ImportFormat.YOLO),
        ("cvat", ImportFormat.CVAT),
    ],
)
def test_we_import_what_datumaro_writes(datumaro_format: str, ours: ImportFormat, tmp_path: Path) -> None:
    """Datumaro's COCO, VOC, YOLO and CVAT files import with their boxes, polygons and flags, no row errors."""
    _datumaro_dataset().export(str(tmp_path), datumaro_format, save_images=False)
    items, errors = read_all(ours, _zip_dir(tmp_path), sizes=lambda name: (100, 50))
    assert errors == []
    (item,) = items
    assert (item.file_name, item.width, item.height) == ("a.jpg", 100, 50)
    by_label = {r.label: r for r in item.labels.regions}
    car = by_label["car"]
    assert (car.label, car.box.x, car.box.y, car.box.width, car.box.height) == ("car", 1.5, 2, 10, 20)
    if ours == ImportFormat.YOLO:
        assert len(item.labels.regions) == 1
        return
    assert car.attributes["occluded"] == "true"
    if ours != ImportFormat.PASCAL_VOC:
        road = by_label["road"]
        assert [(p.x, p.y) for p in road.polygon.points] == [(0, 0), (10, 0), (10, 10)]
    if ours == ImportFormat.CVAT:
        assert (car.attributes["z_order"], car.attributes["group_id"]) == ("1", "3")
