"""Label validation and geometry helpers in common/labels.py."""

from __future__ import annotations

import math

import pytest
from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.common.v1 import common_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.labels import ItemFacts, bounding_box, iou, validate_labels, validate_structure

IMAGE = ItemFacts(media_type=common_pb2.MEDIA_TYPE_IMAGE, width=640, height=480)
TEXT = ItemFacts(media_type=common_pb2.MEDIA_TYPE_TEXT, text="Alice met Bob in Paris.")


def schema(
    mode: int = tasks_pb2.CLASSIFICATION_MODE_SINGLE, allow_not_sure: bool = True
) -> tasks_pb2.LabelSchema:
    return tasks_pb2.LabelSchema(
        version=1,
        classification_mode=mode,  # type: ignore[arg-type]
        classes=[tasks_pb2.ClassLabel(name="cat"), tasks_pb2.ClassLabel(name="dog")],
        allow_not_sure=allow_not_sure,
        objects=[
            tasks_pb2.ObjectLabel(
                name="car",
                kind=tasks_pb2.OBJECT_KIND_BOX,
                attributes=[
                    tasks_pb2.AttributeDefinition(
                        name="color", type=tasks_pb2.ATTRIBUTE_TYPE_SELECT, values=["red", "blue"]
                    ),
                    tasks_pb2.AttributeDefinition(name="occluded", type=tasks_pb2.ATTRIBUTE_TYPE_BOOLEAN),
                    tasks_pb2.AttributeDefinition(name="speed", type=tasks_pb2.ATTRIBUTE_TYPE_NUMBER),
                ],
            ),
            tasks_pb2.ObjectLabel(name="road", kind=tasks_pb2.OBJECT_KIND_POLYGON),
            tasks_pb2.ObjectLabel(
                name="person", kind=tasks_pb2.OBJECT_KIND_KEYPOINTS, keypoint_names=["head", "left", "right"]
            ),
            tasks_pb2.ObjectLabel(
                name="name",
                kind=tasks_pb2.OBJECT_KIND_TEXT_SPAN,
                attributes=[
                    tasks_pb2.AttributeDefinition(
                        name="kind",
                        type=tasks_pb2.ATTRIBUTE_TYPE_SELECT,
                        values=["person", "place"],
                        required=True,
                    )
                ],
            ),
        ],
    )


def box(x: float, y: float, w: float, h: float, **attrs: str) -> pb.Region:
    return pb.Region(label="car", box=pb.Box(x=x, y=y, width=w, height=h), attributes=attrs)


def reason_of(labels: pb.Labels, item: ItemFacts = IMAGE, sch: tasks_pb2.LabelSchema | None = None) -> str:
    with pytest.raises(InvalidArgument) as info:
        validate_labels(labels, sch or schema(), item)
    return info.value.reason


def test_valid_image_labels_pass() -> None:
    """A class, an in-image box with good attributes, a polygon and keypoints validate."""
    labels = pb.Labels(
        classes=["cat"],
        regions=[
            box(10, 10, 100, 50, color="red", occluded="false", speed="12.5"),
            pb.Region(
                label="road",
                polygon=pb.Polygon(points=[pb.Point(x=0, y=0), pb.Point(x=10, y=0), pb.Point(x=5, y=9)]),
            ),
            pb.Region(
                label="person",
                keypoints=pb.Keypoints(
                    points=[
                        pb.Keypoint(x=5, y=5, visibility=2),
                        pb.Keypoint(x=-1, y=-1, visibility=0),
                        pb.Keypoint(x=7, y=8, visibility=1),
                    ]
                ),
            ),
        ],
    )
    validate_labels(labels, schema(), IMAGE)


def test_box_outside_image_names_region_index() -> None:
    """A box past the right edge is GEOMETRY_OUT_OF_IMAGE with the region index and numbers in the message."""
    labels = pb.Labels(classes=["cat"], regions=[box(1, 1, 5, 5), box(1, 1, 5, 5), box(600, 0, 100, 10)])
    with pytest.raises(InvalidArgument) as info:
        validate_labels(labels, schema(), IMAGE)
    assert info.value.reason == "GEOMETRY_OUT_OF_IMAGE"
    assert info.value.message == "regions[2].box: x+width 700 exceeds image width 640"


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (pb.Labels(classes=["horse"]), "UNKNOWN_LABEL"),
        (pb.Labels(classes=["cat", "dog"]), "BAD_CLASSIFICATION"),
        (pb.Labels(classes=[]), "BAD_CLASSIFICATION"),
        (pb.Labels(not_sure=True, classes=["cat"]), "BAD_CLASSIFICATION"),
        (
            pb.Labels(
                classes=["cat"], regions=[pb.Region(label="truck", box=pb.Box(x=1, y=1, width=1, height=1))]
            ),
            "UNKNOWN_LABEL",
        ),
        (
            pb.Labels(classes=["cat"], regions=[pb.Region(label="car", span=pb.TextSpan(start=0, end=2))]),
            "GEOMETRY_MISMATCH",
        ),
        (pb.Labels(classes=["cat"], regions=[pb.Region(label="car")]), "GEOMETRY_MISMATCH"),
        (pb.Labels(classes=["cat"], regions=[box(math.nan, 1, 5, 5)]), "BAD_GEOMETRY"),
        (pb.Labels(classes=["cat"], regions=[box(1, 1, math.inf, 5)]), "BAD_GEOMETRY"),
        (pb.Labels(classes=["cat"], regions=[box(1, 1, -5, 5)]), "BAD_GEOMETRY"),
        (pb.Labels(classes=["cat"], regions=[box(1, 1, 0, 5)]), "BAD_GEOMETRY"),
        (pb.Labels(classes=["cat"], regions=[box(-1, 1, 5, 5)]), "GEOMETRY_OUT_OF_IMAGE"),
        (pb.Labels(classes=["cat"], regions=[box(1, 470, 5, 20)]), "GEOMETRY_OUT_OF_IMAGE"),
        (pb.Labels(classes=["cat"], regions=[box(1, 1, 5, 5, color="green")]), "BAD_ATTRIBUTE"),
        (pb.Labels(classes=["cat"], regions=[box(1, 1, 5, 5, occluded="yes")]), "BAD_ATTRIBUTE"),
        (pb.Labels(classes=["cat"], regions=[box(1, 1, 5, 5, speed="nan")]), "BAD_ATTRIBUTE"),
        (pb.Labels(classes=["cat"], regions=[box(1, 1, 5, 5, wheels="4")]), "BAD_ATTRIBUTE"),
        (
            pb.Labels(
                classes=["cat"],
                regions=[pb.Region(label="road", polygon=pb.Polygon(points=[pb.Point(x=1, y=1)] * 2))],
            ),
            "BAD_GEOMETRY",
        ),
        (
            pb.Labels(
                classes=["cat"],
                regions=[
                    pb.Region(
                        label="road",
                        polygon=pb.Polygon(
                            points=[pb.Point(x=1, y=1), pb.Point(x=2, y=2), pb.Point(x=900, y=2)]
                        ),
                    )
                ],
            ),
            "GEOMETRY_OUT_OF_IMAGE",
        ),
        (
            pb.Labels(
                classes=["cat"],
                regions=[
                    pb.Region(
                        label="person", keypoints=pb.Keypoints(points=[pb.Keypoint(x=1, y=1, visibility=2)])
                    )
                ],
            ),
            "BAD_GEOMETRY",
        ),
        (
            pb.Labels(
                classes=["cat"],
                regions=[
                    pb.Region(
                        label="person",
                        keypoints=pb.Keypoints(points=[pb.Keypoint(x=1, y=1, visibility=3)] * 3),
                    )
                ],
            ),
            "BAD_GEOMETRY",
        ),
        (
            pb.Labels(
                classes=["cat"],
                regions=[
                    pb.Region(
                        label="person",
                        keypoints=pb.Keypoints(points=[pb.Keypoint(x=1000, y=1, visibility=1)] * 3),
                    )
                ],
            ),
            "GEOMETRY_OUT_OF_IMAGE",
        ),
    ],
)
def test_bad_labels_are_refused_with_reason(labels: pb.Labels, reason: str) -> None:
    """Each kind of bad label gets INVALID_ARGUMENT with its specific reason."""
    assert reason_of(labels) == reason


def test_not_sure_only_when_allowed() -> None:
    """'not sure' passes when the schema allows it and is BAD_CLASSIFICATION otherwise."""
    validate_labels(pb.Labels(not_sure=True), schema(), IMAGE)
    assert reason_of(pb.Labels(not_sure=True), sch=schema(allow_not_sure=False)) == "BAD_CLASSIFICATION"


def test_multi_and_no_classification_modes() -> None:
    """MULTI accepts any unique subset; a schema without classification refuses classes."""
    multi = schema(tasks_pb2.CLASSIFICATION_MODE_MULTI)
    validate_labels(pb.Labels(classes=[]), multi, IMAGE)
    validate_labels(pb.Labels(classes=["cat", "dog"]), multi, IMAGE)
    assert reason_of(pb.Labels(classes=["cat", "cat"]), sch=multi) == "BAD_CLASSIFICATION"
    none = schema(tasks_pb2.CLASSIFICATION_MODE_UNSPECIFIED)
    validate_labels(pb.Labels(), none, IMAGE)
    assert reason_of(pb.Labels(classes=["cat"]), sch=none) == "BAD_CLASSIFICATION"


def test_spans_on_text_and_wrong_media() -> None:
    """Spans validate on text within its length; a box on text and a span on an image are refused."""
    span = pb.Region(label="name", span=pb.TextSpan(start=0, end=5), attributes={"kind": "person"})
    validate_labels(pb.Labels(classes=["cat"], regions=[span]), schema(), TEXT)
    assert reason_of(pb.Labels(classes=["cat"], regions=[span]), IMAGE) == "GEOMETRY_MISMATCH"
    assert reason_of(pb.Labels(classes=["cat"], regions=[box(1, 1, 2, 2)]), TEXT) == "GEOMETRY_MISMATCH"
    long = pb.Region(label="name", span=pb.TextSpan(start=0, end=99), attributes={"kind": "person"})
    assert reason_of(pb.Labels(classes=["cat"], regions=[long]), TEXT) == "GEOMETRY_OUT_OF_IMAGE"
    backwards = pb.Region(label="name", span=pb.TextSpan(start=5, end=5), attributes={"kind": "person"})
    assert reason_of(pb.Labels(classes=["cat"], regions=[backwards]), TEXT) == "BAD_GEOMETRY"
    missing = pb.Region(label="name", span=pb.TextSpan(start=0, end=5))
    assert reason_of(pb.Labels(classes=["cat"], regions=[missing]), TEXT) == "BAD_ATTRIBUTE"


def test_structure_checks_without_schema() -> None:
    """Predictions get structural checks only: any label name, but finite positive geometry."""
    validate_structure(
        pb.Labels(
            classes=["anything"], regions=[pb.Region(label="x", box=pb.Box(x=-5, y=0, width=1, height=1))]
        )
    )
    with pytest.raises(InvalidArgument):
        validate_structure(
            pb.Labels(regions=[pb.Region(label="x", box=pb.Box(x=0, y=0, width=math.nan, height=1))])
        )


def test_iou_and_bounding_box() -> None:
    """IoU of identical, disjoint and half-overlapping boxes; bounding box of points."""
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert bounding_box([(1, 2), (5, 3), (2, 9)]) == (1, 2, 4, 7)
