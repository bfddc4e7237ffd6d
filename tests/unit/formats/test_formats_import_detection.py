"""COCO, Pascal VOC and YOLO importers: every geometry they carry, and bad rows as row errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.coco import read_coco
from annocloud_server.formats.importers import ImportFormat
from annocloud_server.formats.model import ImportedItem, RowError
from annocloud_server.formats.safety import SafeZip
from formats_support import json_bytes, make_zip, read_all
from pycocotools import mask as coco_mask

CATEGORIES = [
    {"id": 1, "name": "car"},
    {"id": 2, "name": "road"},
    {"id": 3, "name": "person", "keypoints": ["head", "foot"], "skeleton": []},
]


def _coco(images: list[dict], annotations: list[dict]) -> tuple[list[ImportedItem], list[RowError]]:  # type: ignore[type-arg]
    doc = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    records = list(read_coco(io.BytesIO(json_bytes(doc))))
    return [r for r in records if isinstance(r, ImportedItem)], [
        r for r in records if isinstance(r, RowError)
    ]


IMAGE = {"id": 7, "file_name": "a.jpg", "width": 100, "height": 50}


def test_coco_boxes_polygons_and_keypoints() -> None:
    """bbox → box, polygon segmentation → polygon, keypoints keep visibility (v=0 zeroed), attributes kept."""
    items, errors = _coco(
        [IMAGE],
        [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 1,
                "bbox": [1, 2, 3, 4],
                "attributes": {"occluded": True},
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 2,
                "segmentation": [[0, 0, 10, 0, 10, 10]],
                "bbox": [0, 0, 10, 10],
            },
            {"id": 3, "image_id": 7, "category_id": 3, "keypoints": [5, 6, 2, 9, 9, 0], "bbox": [5, 6, 0, 0]},
        ],
    )
    assert errors == []
    (item,) = items
    assert (item.file_name, item.width, item.height) == ("a.jpg", 100, 50)
    car, road, person = item.labels.regions
    assert (car.label, car.box.x, car.box.height, dict(car.attributes)) == ("car", 1, 4, {"occluded": "true"})
    assert [(p.x, p.y) for p in road.polygon.points] == [(0, 0), (10, 0), (10, 10)]
    assert [(p.x, p.y, p.visibility) for p in person.keypoints.points] == [(5, 6, 2), (0, 0, 0)]


def test_coco_rle_becomes_pixel_polygons() -> None:
    """An RLE mask (compressed or not) becomes one polygon per blob through pixel corners."""
    mask = np.zeros((50, 100), dtype=np.uint8)
    mask[10:20, 30:60] = 1
    mask[30:35, 0:5] = 1
    compressed = coco_mask.encode(np.asfortranarray(mask))
    rle = {"size": [50, 100], "counts": compressed["counts"].decode()}
    items, errors = _coco(
        [IMAGE], [{"id": 1, "image_id": 7, "category_id": 2, "segmentation": rle, "iscrowd": 1}]
    )
    assert errors == []
    polygons = items[0].labels.regions
    assert len(polygons) == 2
    corners = sorted((p.x, p.y) for p in polygons[0].polygon.points)
    assert corners == [(30, 10), (30, 20), (60, 10), (60, 20)]


@pytest.mark.parametrize(
    ("annotation", "reason"),
    [
        ({"category_id": 9, "bbox": [1, 1, 1, 1]}, "UNKNOWN_LABEL"),
        ({"category_id": 1, "bbox": [-1, 1, 5, 5]}, "GEOMETRY_OUT_OF_IMAGE"),
        ({"category_id": 1, "bbox": [90, 1, 20, 5]}, "GEOMETRY_OUT_OF_IMAGE"),
        ({"category_id": 1, "bbox": [1, 1, 0, 5]}, "BAD_GEOMETRY"),
        ({"category_id": 1, "bbox": [1, 1, "w", 5]}, "BAD_GEOMETRY"),
        ({"category_id": 2, "segmentation": [[0, 0, 1, 1]]}, "BAD_GEOMETRY"),
        ({"category_id": 3, "keypoints": [1, 1, 2]}, "BAD_GEOMETRY"),
        ({"category_id": 3, "keypoints": [1, 1, 5, 2, 2, 2]}, "BAD_GEOMETRY"),
        ({"category_id": 2, "segmentation": {"size": [50, 100], "counts": [1, 2]}}, "BAD_GEOMETRY"),
        ({"category_id": 1, "bbox": [1, 1, 1, 1], "attributes": {"x": [1]}}, "BAD_ATTRIBUTE"),
    ],
)
def test_coco_bad_annotations_are_row_errors(annotation: dict, reason: str) -> None:  # type: ignore[type-arg]
    """Each bad annotation is one RowError naming its index and id; the image is still yielded."""
    items, errors = _coco([IMAGE], [{"id": 42, "image_id": 7, **annotation}])
    assert [e.reason for e in errors] == [reason]
    assert "annotations[0] (id 42)" in errors[0].where
    assert len(items) == 1
    assert len(items[0].labels.regions) == 0


def test_coco_bad_images_orphans_and_document() -> None:
    """Traversal in file_name, duplicate ids and orphan annotations are row errors; a non-object is refused."""
    _, errors = _coco(
        [{**IMAGE, "file_name": "../../etc/passwd"}, IMAGE, IMAGE],
        [{"id": 1, "image_id": 99, "category_id": 1, "bbox": [1, 1, 1, 1]}],
    )
    # Orphans are found while the annotations stream (pass 2), before the images are yielded.
    assert [e.reason for e in errors] == ["BAD_ROW", "UNSAFE_FILE_NAME", "BAD_ROW"]
    assert "no image has id 99" in errors[0].message
    assert "appears twice" in errors[2].message
    with pytest.raises(InvalidArgument) as err:
        list(read_coco(io.BytesIO(b"[1, 2]")))
    assert err.value.reason == "COCO_INVALID"
    with pytest.raises(InvalidArgument) as err:
        list(read_coco(io.BytesIO(b'{"images": [], "x": NaN}')))
    assert err.value.reason == "JSON_NON_FINITE"


def test_coco_known_labels_and_size_cap() -> None:
    """A caller's known labels turn other categories into UNKNOWN_LABEL; oversize files are refused."""
    doc = json_bytes(
        {
            "images": [IMAGE],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 1, 1]}],
            "categories": CATEGORIES,
        }
    )
    records = list(read_coco(io.BytesIO(doc), known_labels={"road"}))
    errors = [r for r in records if isinstance(r, RowError)]
    assert (len(records) - len(errors), len(errors), errors[0].reason) == (1, 1, "UNKNOWN_LABEL")
    with pytest.raises(InvalidArgument) as err:
        list(read_coco(io.BytesIO(doc), max_bytes=10))
    assert err.value.reason == "JSON_TOO_LARGE"


class _ChunkRecorder(io.BytesIO):
    """A stream that remembers the largest read asked of it and how often it was rewound."""

    largest_read = 0
    rewinds = 0

    def read(self, size: int | None = -1, /) -> bytes:
        self.largest_read = max(self.largest_read, size if size is not None and size >= 0 else 1 << 62)
        return super().read(size)

    def seek(self, offset: int, whence: int = 0, /) -> int:
        self.rewinds += 1
        return super().seek(offset, whence)


def test_coco_streams_in_bounded_reads_whatever_the_section_order() -> None:
    """A 4 MiB COCO document with annotations before images is read in ≤256 KiB chunks, three passes, right."""
    images = [{"id": i, "file_name": f"f{i}.jpg", "width": 100, "height": 50} for i in range(20_000)]
    annotations = [
        {"id": k, "image_id": (k * 7919) % 20_000, "category_id": 1 + k % 2, "bbox": [1, 1, k % 9 + 1, 2]}
        for k in range(40_000)
    ]
    doc = json_bytes({"annotations": annotations, "categories": CATEGORIES, "images": images})
    assert len(doc) > 4 * 2**20
    stream = _ChunkRecorder(doc)
    records = list(read_coco(stream))
    items = [r for r in records if isinstance(r, ImportedItem)]
    assert stream.largest_read <= 1 << 18
    assert stream.rewinds == 3
    assert [i.file_name for i in items] == [f"f{i}.jpg" for i in range(20_000)]
    assert sum(len(i.labels.regions) for i in items) == 40_000
    first = [a for a in annotations if a["image_id"] == 0]
    assert [r.box.width for r in items[0].labels.regions] == [a["bbox"][2] for a in first]


def test_coco_opener_and_hostile_documents() -> None:
    """An opener is called once per pass; deep nesting split across chunks and non-list sections are refused."""
    opened = []

    def opener() -> io.BytesIO:
        opened.append(1)
        return io.BytesIO(json_bytes({"images": [IMAGE], "categories": CATEGORIES}))

    assert len([r for r in read_coco(opener) if isinstance(r, ImportedItem)]) == 1
    assert len(opened) == 3
    deep = b'{"images": [], "annotations": [' + b" " * (1 << 18) + b"[" * 70 + b"]" * 70 + b"]}"
    cases = {
        deep: "JSON_TOO_DEEP",
        b'{"images": {"item": 1}}': "COCO_INVALID",
        b'{"annotations": []}': "COCO_INVALID",
        b'{"images": [], "annotations": 3}': "COCO_INVALID",
        b'{"images": [], "annotations": [{"bbox": [1, Infinity]}]}': "JSON_NON_FINITE",
        b'{"images": [}': "JSON_INVALID",
    }
    for document, reason in cases.items():
        with pytest.raises(InvalidArgument) as err:
            list(read_coco(io.BytesIO(document)))
        assert err.value.reason == reason, document[:40]


VOC = """<annotation><filename>a.jpg</filename><size><width>100</width><height>50</height><depth>3</depth></size>
<object><name>car</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult><occluded>1</occluded>
<bndbox><xmin>1.5</xmin><ymin>2</ymin><xmax>11.5</xmax><ymax>22</ymax></bndbox>
<attributes><attribute><name>color</name><value>red</value></attribute></attributes></object>
<object><name>car</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>200</xmax><ymax>22</ymax></bndbox></object>
<object><name>car</name><bndbox><xmin>x</xmin><ymin>2</ymin><xmax>3</xmax><ymax>22</ymax></bndbox></object>
</annotation>"""


def test_voc_boxes_flags_and_row_errors() -> None:
    """VOC corners become x/y/width/height; pose/truncated/occluded/attributes kept; bad boxes are row errors."""
    archive = SafeZip(
        make_zip({"Annotations/a.xml": VOC, "labelmap.txt": "car:::\n", "JPEGImages/a.jpg": b"x"})
    )
    items, errors = read_all(ImportFormat.PASCAL_VOC, archive)
    (item,) = items
    (car,) = item.labels.regions
    assert (car.box.x, car.box.y, car.box.width, car.box.height) == (1.5, 2, 10, 20)
    assert dict(car.attributes) == {"pose": "Left", "truncated": "true", "occluded": "true", "color": "red"}
    assert [(e.where, e.reason) for e in errors] == [
        ("Annotations/a.xml: object[1]", "GEOMETRY_OUT_OF_IMAGE"),
        ("Annotations/a.xml: object[2]", "BAD_GEOMETRY"),
    ]


def test_voc_labelmap_unknown_labels_and_xxe() -> None:
    """labelmap.txt decides known labels; an XXE file is one XML_FORBIDDEN row error, others still import."""
    xxe = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation>&x;</annotation>'
    archive = SafeZip(
        make_zip({"Annotations/a.xml": VOC, "Annotations/b.xml": xxe, "labelmap.txt": "bus:::\n"})
    )
    items, errors = read_all(ImportFormat.PASCAL_VOC, archive)
    assert len(items) == 1
    assert ("Annotations/b.xml", "XML_FORBIDDEN") in [(e.where, e.reason) for e in errors]
    assert [e.reason for e in errors if e.where.startswith("Annotations/a.xml")] == [
        "UNKNOWN_LABEL",
        "UNKNOWN_LABEL",
        "BAD_GEOMETRY",
    ]


def test_yolo_detection_and_segmentation_with_sizes() -> None:
    """Box and polygon lines denormalise with the caller's sizes; names from obj.names; image from train.txt."""
    files = {
        "obj.names": "car\nroad\n",
        "train.txt": "./obj_train_data/a.png\n",
        "obj_train_data/a.txt": "0 0.5 0.5 0.2 0.4\n1 0 0 1 0 1 1\n",
    }
    items, errors = read_all(ImportFormat.YOLO, SafeZip(make_zip(files)), sizes=lambda name: (200, 100))
    assert errors == []
    (item,) = items
    assert (item.file_name, item.width, item.height) == ("a.png", 200, 100)
    car, road = item.labels.regions
    assert (car.label, car.box.x, car.box.y, car.box.width, car.box.height) == ("car", 80, 30, 40, 40)
    assert [(p.x, p.y) for p in road.polygon.points] == [(0, 0), (200, 0), (200, 100)]


def test_yolo_ultralytics_layout_reads_sizes_from_image_headers() -> None:
    """labels/x.txt pairs with images/x.jpg; its size is read from the image header; data.yaml gives names."""
    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (64, 32)).save(picture, "JPEG")
    files = {
        "data.yaml": 'names:\n  0: "car"\n',
        "images/train/x.jpg": picture.getvalue(),
        "labels/train/x.txt": "0 0.5 0.5 0.5 0.5\n",
    }
    items, errors = read_all(ImportFormat.YOLO, SafeZip(make_zip(files)))
    assert errors == []
    assert (items[0].file_name, items[0].width, items[0].height) == ("x.jpg", 64, 32)
    assert items[0].labels.regions[0].box.width == 32


def test_yolo_bad_lines_missing_sizes_and_names() -> None:
    """Unknown class ids, bad field counts, out-of-image boxes and unknown sizes are row errors."""
    files = {
        "obj.names": "car\n",
        "images.meta": "a 100 200\n",
        "obj_train_data/a.txt": "5 0.5 0.5 0.1 0.1\n0 0.5 0.5\n0 0.9 0.5 0.5 0.1\n0 nan 0.5 0.1 0.1\n",
        "obj_train_data/b.txt": "0 0.5 0.5 0.1 0.1\n",
    }
    _, errors = read_all(ImportFormat.YOLO, SafeZip(make_zip(files)))
    assert [(e.where, e.reason) for e in errors] == [
        ("obj_train_data/a.txt:1", "UNKNOWN_LABEL"),
        ("obj_train_data/a.txt:2", "BAD_ROW"),
        ("obj_train_data/a.txt:3", "GEOMETRY_OUT_OF_IMAGE"),
        ("obj_train_data/a.txt:4", "BAD_ROW"),
        ("obj_train_data/b.txt:1", "MISSING_IMAGE_SIZE"),
    ]
    with pytest.raises(InvalidArgument) as err:
        read_all(ImportFormat.YOLO, SafeZip(make_zip({"obj_train_data/a.txt": ""})))
    assert err.value.reason == "YOLO_NAMES_MISSING"
