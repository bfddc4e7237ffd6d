"""Import → export → import gives identical file names, labels and attributes, for every format.

Label sets are generated from a seed, limited to what each format can carry (docs/formats.md says
what each keeps); coordinates lie on a half-pixel grid inside 400x200 images.
"""

from __future__ import annotations

import io
import json
import random

import pytest
from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.export.v1 import export_pb2
from annocloud_server.formats.importers import ImportFormat
from annocloud_server.formats.model import ImportedItem
from annocloud_server.formats.safety import SafeZip
from formats_support import comparable, export_zip, image, make_zip, read_all, round_trip, text_record

E = export_pb2
FEATURES: dict[int, set[str]] = {
    E.EXPORT_FORMAT_JSONL: {"box", "polygon", "keypoints", "classes", "not_sure", "attributes", "text"},
    E.EXPORT_FORMAT_COCO: {"box", "polygon", "keypoints", "classes", "not_sure", "attributes"},
    E.EXPORT_FORMAT_CVAT: {"box", "polygon", "keypoints", "classes", "attributes", "cvat_flags"},
    E.EXPORT_FORMAT_LABEL_STUDIO: {
        "box",
        "polygon",
        "keypoints",
        "classes",
        "not_sure",
        "attributes",
        "text",
    },
    E.EXPORT_FORMAT_PASCAL_VOC: {"box", "attributes", "voc_flags"},
    E.EXPORT_FORMAT_YOLO: {"box"},
    E.EXPORT_FORMAT_YOLO_SEGMENTATION: {"polygon"},
}
VALUES = ["red", "a b", "<&>\"'", "é ü", "x;y,z", "line1\nline2", "42", "-1"]


def _coord(rng: random.Random, limit: int) -> float:
    return rng.randrange(0, 2 * limit) / 2


def _region(rng: random.Random, kind: str, features: set[str]) -> ann.Region:
    if kind == "box":
        x, y = _coord(rng, 300), _coord(rng, 150)
        region = ann.Region(
            label=rng.choice(["car", "truck"]),
            box=ann.Box(x=x, y=y, width=rng.randrange(1, 200) / 2, height=rng.randrange(1, 100) / 2),
        )
    elif kind == "polygon":
        points = [ann.Point(x=_coord(rng, 400), y=_coord(rng, 200)) for _ in range(rng.randrange(3, 7))]
        region = ann.Region(label="road", polygon=ann.Polygon(points=points))
    else:
        points = [
            ann.Keypoint(x=_coord(rng, 400), y=_coord(rng, 200), visibility=rng.choice([1, 2]))
            for _ in range(3)
        ]
        points[rng.randrange(3)] = ann.Keypoint()  # one absent point, written 0, 0, 0 everywhere
        region = ann.Region(label="person", keypoints=ann.Keypoints(points=points))
    if "attributes" in features and kind != "keypoints" and region.label != "truck":
        for key in rng.sample(["color", "note", "kind"], rng.randrange(0, 3)):
            region.attributes[key] = rng.choice(VALUES)
    if "cvat_flags" in features and rng.random() < 0.5:
        region.attributes.update(
            occluded="true", z_order=str(rng.randrange(1, 5)), group_id=str(rng.randrange(1, 9))
        )
    if "voc_flags" in features and rng.random() < 0.5:
        region.attributes.update(occluded="true", difficult="true", pose="Left")
    return region


def generate(seed: int, fmt: int) -> list[ImportedItem]:
    """A few images (and text records where the format has them) with random labels."""
    rng = random.Random(seed)
    features = FEATURES[fmt]
    kinds = [k for k in ("box", "polygon", "keypoints") if k in features]
    items: list[ImportedItem] = []
    for index in range(rng.randrange(1, 5)):
        regions = [_region(rng, rng.choice(kinds), features) for _ in range(rng.randrange(0, 6))]
        classes = rng.sample(["day", "night"], rng.randrange(0, 3)) if "classes" in features else []
        not_sure = "not_sure" in features and not classes and rng.random() < 0.3
        items.append(image(f"img-{seed}_{index}.jpg", regions, classes=classes, not_sure=not_sure))
    if "text" in features:
        span = ann.Region(label="entity", span=ann.TextSpan(start=0, end=5))
        items.append(text_record(f"note-{seed}.txt", "Paris is big", [span]))
    return items


@pytest.mark.parametrize("fmt", list(FEATURES), ids=[E.ExportFormat.Name(f) for f in FEATURES])
def test_generated_label_sets_round_trip_exactly(fmt: int) -> None:
    """For 12 seeds: export then import gives the same names and labels, twice over, without row errors."""
    for seed in range(12):
        items = generate(seed, fmt)
        once, errors = round_trip(fmt, items)
        assert errors == [], (seed, errors)
        assert comparable(once) == comparable(items), seed
        twice, errors = round_trip(fmt, once)
        assert errors == []
        assert comparable(twice) == comparable(once)
        if fmt != E.EXPORT_FORMAT_LABEL_STUDIO:
            assert [(i.width, i.height) for i in once] == [(i.width, i.height) for i in items]


def test_yolo_text_is_a_fixed_point() -> None:
    """Arbitrary 6-decimal YOLO lines import, export byte for byte the same, and import to the same labels."""
    rng = random.Random(3)
    lines = [
        f"{rng.randrange(2)} {rng.uniform(0.2, 0.8):.6f} {rng.uniform(0.2, 0.8):.6f} "
        f"{rng.uniform(0.01, 0.3):.6f} {rng.uniform(0.01, 0.3):.6f}"
        for _ in range(40)
    ]
    text = "".join(f"{line}\n" for line in lines)
    files = {"obj.names": "car\ntruck\n", "images.meta": "a 480 640\n", "obj_train_data/a.txt": text}
    first, errors = read_all(ImportFormat.YOLO, SafeZip(make_zip(files)))
    assert errors == []
    archive = export_zip(
        E.EXPORT_FORMAT_YOLO, [ImportedItem(file_name="a.jpg", width=640, height=480, labels=first[0].labels)]
    )
    assert archive.read("obj_train_data/a.txt", max_bytes=1 << 20).decode() == text
    again, _ = read_all(ImportFormat.YOLO, archive)
    assert comparable(again) == [("a.jpg", first[0].labels.SerializeToString(deterministic=True))]


def test_label_studio_percentages_are_a_fixed_point() -> None:
    """Arbitrary percentages import to pixels rounded to 1e-6; export and import again change nothing."""
    rng = random.Random(5)
    results = [
        {"id": f"r{i}", "type": "rectanglelabels", "original_width": 333, "original_height": 777,
         "value": {"x": rng.uniform(0, 50), "y": rng.uniform(0, 50), "width": rng.uniform(1, 40),
                   "height": rng.uniform(1, 40), "rectanglelabels": ["car"]}}
        for i in range(30)
    ]  # fmt: skip
    tasks = json.dumps([{"data": {"image": "a.jpg"}, "annotations": [{"result": results}]}]).encode()
    first, errors = read_all(ImportFormat.LABEL_STUDIO, SafeZip(make_zip({"tasks.json": tasks})))
    assert errors == []
    second, errors = round_trip(E.EXPORT_FORMAT_LABEL_STUDIO, first)
    assert errors == []
    assert comparable(second) == comparable(first)
    assert (second[0].width, second[0].height) == (333, 777)


def test_jsonl_round_trip_of_the_export_file_itself() -> None:
    """items.jsonl of an export, imported and exported again, gives byte-identical region lines."""
    items = generate(99, E.EXPORT_FORMAT_JSONL)
    first = export_zip(E.EXPORT_FORMAT_JSONL, items).read("items.jsonl", max_bytes=1 << 20)
    again, _ = read_all(ImportFormat.JSONL, SafeZip(io.BytesIO(make_zip({"items.jsonl": first}).getvalue())))
    second = export_zip(E.EXPORT_FORMAT_JSONL, again).read("items.jsonl", max_bytes=1 << 20)
    assert first == second
