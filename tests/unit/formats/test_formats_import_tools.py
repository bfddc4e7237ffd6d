"""CVAT XML, Label Studio JSON and JSONL importers: shapes, attributes, classes, and bad rows."""

from __future__ import annotations

import io

import pytest
from annocloud.common.v1 import common_pb2
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.cvat import read_cvat
from annocloud_server.formats.importers import ImportFormat, import_archive
from annocloud_server.formats.jsonl import read_jsonl
from annocloud_server.formats.labelstudio import read_label_studio
from annocloud_server.formats.model import ImportedItem, Record, RowError
from annocloud_server.formats.safety import SafeZip
from formats_support import json_bytes, make_zip


def _split(records: list[Record]) -> tuple[list[ImportedItem], list[RowError]]:
    return [r for r in records if isinstance(r, ImportedItem)], [
        r for r in records if isinstance(r, RowError)
    ]


CVAT = b"""<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
<meta><task><labels>
 <label><name>car</name><type>rectangle</type></label>
 <label><name>road</name><type>polygon</type></label>
 <label><name>person</name><type>skeleton</type></label>
 <label><name>head</name><type>points</type><parent>person</parent></label>
 <label><name>pin</name><type>points</type></label>
 <label><name>day</name><type>tag</type></label>
</labels></task></meta>
<image id="0" name="a.jpg" width="100" height="50">
 <box label="car" occluded="1" xtl="1.5" ytl="2" xbr="11.5" ybr="22" z_order="2" group_id="4">
  <attribute name="color">red</attribute></box>
 <polygon label="road" occluded="0" points="0,0;10,0;10,10" z_order="0"/>
 <points label="pin" points="1,1;2,2"/>
 <skeleton label="person"><points label="head" outside="0" occluded="1" points="5,6"/>
  <points label="foot" outside="1" occluded="0" points="50,50"/></skeleton>
 <tag label="day"/>
</image>
<image id="1" name="b.jpg" width="100" height="50">
 <box label="bus" xtl="1" ytl="1" xbr="2" ybr="2"/>
 <box label="car" xtl="1" ytl="1" xbr="200" ybr="2"/>
 <polygon label="road" points="0,0;1,1"/>
 <polyline label="road" points="0,0;1,1"/>
</image>
<image id="2" name="../x.jpg" width="1" height="1"/>
<track id="0" label="car"><box frame="0" xtl="1" ytl="1" xbr="2" ybr="2"/></track>
</annotations>"""


def test_cvat_shapes_flags_and_tags() -> None:
    """box/polygon/points/skeleton map to regions; occluded, z_order, group_id and attributes are kept."""
    items, errors = _split(list(read_cvat(io.BytesIO(CVAT))))
    first = items[0]
    assert (first.file_name, first.width, first.height, list(first.labels.classes)) == (
        "a.jpg",
        100,
        50,
        ["day"],
    )
    car, road, pin, person = first.labels.regions
    assert (car.box.x, car.box.y, car.box.width, car.box.height) == (1.5, 2, 10, 20)
    assert dict(car.attributes) == {"occluded": "true", "z_order": "2", "group_id": "4", "color": "red"}
    assert len(road.polygon.points) == 3
    assert dict(road.attributes) == {}
    assert [p.visibility for p in pin.keypoints.points] == [2, 2]
    assert [(p.x, p.y, p.visibility) for p in person.keypoints.points] == [(5, 6, 1), (0, 0, 0)]
    assert [(e.where.split(": ")[1], e.reason) for e in errors] == [
        ("image[1] (b.jpg) <box>", "UNKNOWN_LABEL"),
        ("image[1] (b.jpg) <box>", "GEOMETRY_OUT_OF_IMAGE"),
        ("image[1] (b.jpg) <polygon>", "BAD_GEOMETRY"),
        ("image[1] (b.jpg) <polyline>", "UNSUPPORTED_SHAPE"),
        ("image[2] (../x.jpg)", "UNSAFE_FILE_NAME"),
        ("<track>", "UNSUPPORTED_SHAPE"),
    ]


def test_cvat_refuses_entities_and_finds_its_file_in_archives() -> None:
    """A billion-laughs CVAT file is XML_FORBIDDEN; annotations.xml is found inside a zip."""
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaa">]><annotations>&a;</annotations>'
    with pytest.raises(InvalidArgument) as err:
        list(read_cvat(io.BytesIO(bomb)))
    assert err.value.reason == "XML_FORBIDDEN"
    records = list(import_archive(SafeZip(make_zip({"annotations.xml": CVAT})), ImportFormat.CVAT))
    assert sum(isinstance(r, ImportedItem) for r in records) == 2


LS_TASKS = [
    {
        "id": 1,
        "data": {"image": "/data/upload/3/a%20b.jpg?x=1"},
        "annotations": [
            {"was_cancelled": True, "result": []},
            {
                "result": [
                    {"id": "r1", "type": "rectanglelabels", "original_width": 200, "original_height": 100,
                     "value": {"x": 10, "y": 20, "width": 50, "height": 30, "rotation": 0, "rectanglelabels": ["car"]}},
                    {"id": "r1", "type": "textarea", "from_name": "color", "value": {"text": ["red"]}},
                    {"id": "r2", "type": "polygonlabels", "original_width": 200, "original_height": 100,
                     "value": {"points": [[0, 0], [50, 0], [50, 50]], "polygonlabels": ["road"]}},
                    {"id": "k1", "type": "keypointlabels", "original_width": 200, "original_height": 100,
                     "value": {"x": 25, "y": 50, "width": 1, "keypointlabels": ["head"]}},
                    {"id": "c", "type": "choices", "from_name": "class", "value": {"choices": ["day"]}},
                    {"id": "r3", "type": "rectanglelabels", "original_width": 200, "original_height": 100,
                     "value": {"x": 90, "y": 0, "width": 20, "height": 10, "rectanglelabels": ["car"]}},
                    {"id": "r4", "type": "brushlabels", "value": {"format": "rle", "rle": [1]}},
                ]
            },
        ],
    },
    {"id": 2, "data": {"text": "Paris is big", "file_name": "t.txt"},
     "predictions": [{"result": [{"id": "s", "type": "labels", "value": {"start": 0, "end": 5, "labels": ["city"]}}]}]},
    {"id": 3, "data": {"video": "x.mp4"}},
]  # fmt: skip


def test_label_studio_percent_coordinates_attributes_and_choices() -> None:
    """Percentages become pixels; per-region textarea results become attributes; choices become classes."""
    items, errors = _split(list(read_label_studio(io.BytesIO(json_bytes(LS_TASKS)))))
    image, text = items
    assert (image.file_name, image.width, image.height, list(image.labels.classes)) == (
        "a b.jpg",
        200,
        100,
        ["day"],
    )
    car, road, head = image.labels.regions
    assert (car.box.x, car.box.y, car.box.width, car.box.height, dict(car.attributes)) == (
        20,
        20,
        100,
        30,
        {"color": "red"},
    )
    assert [(p.x, p.y) for p in road.polygon.points] == [(0, 0), (100, 0), (100, 50)]
    assert [(p.x, p.y, p.visibility) for p in head.keypoints.points] == [(50, 50, 2)]
    assert text.media_type == common_pb2.MEDIA_TYPE_TEXT
    assert (text.labels.regions[0].span.start, text.labels.regions[0].span.end) == (0, 5)
    assert [(e.where, e.reason) for e in errors] == [
        ("tasks.json: tasks[0]: result[6]", "UNSUPPORTED_RESULT"),
        ("tasks.json: tasks[0]: result[5]", "GEOMETRY_OUT_OF_IMAGE"),
        ("tasks.json: tasks[2]", "BAD_ROW"),
    ]


def test_label_studio_refuses_non_lists_and_traversal() -> None:
    """A document that is not a task list is refused; a traversal in data.image cannot escape (basename)."""
    with pytest.raises(InvalidArgument) as err:
        list(read_label_studio(io.BytesIO(b'{"data": {}}')))
    assert err.value.reason == "BAD_FORMAT"
    items, _ = _split(
        list(read_label_studio(io.BytesIO(json_bytes([{"data": {"image": "../../etc/passwd"}}]))))
    )
    assert items[0].file_name == "passwd"
    _, errors = _split(list(read_label_studio(io.BytesIO(json_bytes([{"data": {"image": "/x/.."}}])))))
    assert errors[0].reason == "UNSAFE_FILE_NAME"


def test_jsonl_reads_every_geometry_and_reports_bad_lines() -> None:
    """Our JSONL imports boxes, polygons, keypoints and spans; a broken line or region is a row error."""
    lines = [
        {"file_name": "a.jpg", "media_type": "image", "width": 100, "height": 50, "classes": ["day"], "not_sure": False,
         "regions": [
             {"label": "car", "type": "box", "geometry": {"x": 1, "y": 2, "width": 3, "height": 4},
              "attributes": {"c": "r"}},
             {"label": "road", "type": "polygon", "geometry": {"points": [[0, 0], [1, 0], [1, 1]]}},
             {"label": "p", "type": "keypoints", "geometry": {"points": [[1, 1, 2], [0, 0, 0]]}},
             {"label": "p", "type": "keypoints", "geometry": {"points": [[1, 1, 7]]}},
             {"label": "x", "type": "circle", "geometry": {}},
         ]},
        {"file_name": "t.txt", "media_type": "text", "text": "hello", "regions": [
            {"label": "e", "type": "span", "geometry": {"start": 0, "end": 9}}]},
        {"file_name": "/etc/passwd"},
    ]  # fmt: skip
    data = b"\n".join(json_bytes(line) for line in lines) + b"\n{not json\n"
    items, errors = _split(list(read_jsonl(io.BytesIO(data))))
    assert len(items) == 2
    assert [r.WhichOneof("geometry") for r in items[0].labels.regions] == ["box", "polygon", "keypoints"]
    assert dict(items[0].labels.regions[0].attributes) == {"c": "r"}
    assert [(e.where, e.reason) for e in errors] == [
        ("items.jsonl:1: regions[3]", "BAD_GEOMETRY"),
        ("items.jsonl:1: regions[4]", "BAD_ROW"),
        ("items.jsonl:2: regions[0]", "GEOMETRY_OUT_OF_IMAGE"),
        ("items.jsonl:3", "UNSAFE_FILE_NAME"),
        ("items.jsonl:4", "JSON_INVALID"),
    ]


def test_archive_without_label_file_is_refused() -> None:
    """An archive with no file of the asked format is LABELS_MISSING, not an empty import."""
    with pytest.raises(InvalidArgument) as err:
        list(import_archive(SafeZip(make_zip({"a.jpg": b"x"})), ImportFormat.COCO))
    assert err.value.reason == "LABELS_MISSING"
