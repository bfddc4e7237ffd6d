"""Imported labels against a project's label schema: unknown labels, wrong kinds, keypoint counts."""

from __future__ import annotations

from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.ingestion.schema_check import schema_errors

SCHEMA = tasks_pb2.LabelSchema(
    version=2,
    classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
    classes=[tasks_pb2.ClassLabel(name="day"), tasks_pb2.ClassLabel(name="night")],
    objects=[
        tasks_pb2.ObjectLabel(name="car", kind=tasks_pb2.OBJECT_KIND_BOX),
        tasks_pb2.ObjectLabel(name="lane", kind=tasks_pb2.OBJECT_KIND_POLYGON),
        tasks_pb2.ObjectLabel(
            name="person", kind=tasks_pb2.OBJECT_KIND_KEYPOINTS, keypoint_names=["head", "hand"]
        ),
        tasks_pb2.ObjectLabel(name="product", kind=tasks_pb2.OBJECT_KIND_TEXT_SPAN),
    ],
)


def box(label: str) -> ann.Region:
    return ann.Region(label=label, box=ann.Box(x=1, y=1, width=2, height=2))


def keypoints(label: str, count: int) -> ann.Region:
    points = [ann.Keypoint(x=1, y=1, visibility=2) for _ in range(count)]
    return ann.Region(label=label, keypoints=ann.Keypoints(points=points))


def test_labels_of_every_kind_that_the_schema_holds_pass() -> None:
    """A class, a box, a polygon, two keypoints and a span of the schema's labels give no error."""
    labels = ann.Labels(
        classes=["night"],
        regions=[
            box("car"),
            ann.Region(label="lane", polygon=ann.Polygon(points=[ann.Point(x=0, y=0)] * 3)),
            keypoints("person", 2),
            ann.Region(label="product", span=ann.TextSpan(start=0, end=3)),
        ],
    )
    assert schema_errors(labels, SCHEMA, where="a.json: images[0]") == []


def test_unknown_class_and_object_are_unknown_label_with_their_place() -> None:
    """A class and an object label the schema lacks are UNKNOWN_LABEL at classes[i] / regions[i]."""
    labels = ann.Labels(classes=["dusk"], regions=[box("car"), box("truck")])
    errors = schema_errors(labels, SCHEMA, where="f")
    assert [(e.where, e.reason) for e in errors] == [
        ("f: classes[0]", "UNKNOWN_LABEL"),
        ("f: regions[1]", "UNKNOWN_LABEL"),
    ]
    assert "'truck'" in errors[1].message
    assert "schema version 2" in errors[1].message


def test_geometry_of_another_kind_is_label_kind_mismatch() -> None:
    """A box for a polygon label and a span for a box label are LABEL_KIND_MISMATCH naming both kinds."""
    labels = ann.Labels(regions=[box("lane"), ann.Region(label="car", span=ann.TextSpan(start=0, end=1))])
    errors = schema_errors(labels, SCHEMA, where="f")
    assert [e.reason for e in errors] == ["LABEL_KIND_MISMATCH"] * 2
    assert "polygon" in errors[0].message
    assert "box" in errors[0].message


def test_keypoints_in_another_number_than_the_schema_names_are_refused() -> None:
    """Three keypoints for a label with two names is KEYPOINT_COUNT_MISMATCH."""
    errors = schema_errors(ann.Labels(regions=[keypoints("person", 3)]), SCHEMA, where="f")
    assert [(e.where, e.reason) for e in errors] == [("f: regions[0]", "KEYPOINT_COUNT_MISMATCH")]


def test_a_schema_without_classes_refuses_every_class() -> None:
    """A schema with no classification question knows no class: any imported class is UNKNOWN_LABEL."""
    schema = tasks_pb2.LabelSchema(version=1, objects=SCHEMA.objects)
    errors = schema_errors(ann.Labels(classes=["day"]), schema, where="f")
    assert [e.reason for e in errors] == ["UNKNOWN_LABEL"]
