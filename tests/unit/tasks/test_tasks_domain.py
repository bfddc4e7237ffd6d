"""Pure rules of the tasks service: schema validation, project settings, lease lengths."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.tasks.domain import (
    AttributeSpec,
    AttributeType,
    ClassificationMode,
    ClassSpec,
    ObjectKind,
    ObjectSpec,
    ReviewPolicy,
    SchemaSpec,
    TaskState,
    effective_state,
    lease_duration,
    lease_is_held,
    pick_better,
    schema_version_of,
    validate_project,
    validate_schema,
)

GOOD = SchemaSpec(
    classification_mode=ClassificationMode.SINGLE,
    classes=[
        ClassSpec("cat"),
        ClassSpec("dog", [AttributeSpec("color", AttributeType.SELECT, ["black", "white"])]),
    ],
    objects=[
        ObjectSpec("car", ObjectKind.BOX, attributes=[AttributeSpec("occluded", AttributeType.BOOLEAN)]),
        ObjectSpec("person", ObjectKind.KEYPOINTS, keypoint_names=["head", "left_hand"]),
    ],
)


def _bad(spec: SchemaSpec) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        validate_schema(spec)
    assert info.value.reason == "BAD_SCHEMA"
    return info.value


def test_good_schema_passes() -> None:
    """A schema with classes, boxes, keypoints and attributes is accepted."""
    validate_schema(GOOD)
    validate_schema(SchemaSpec(objects=[ObjectSpec("span", ObjectKind.TEXT_SPAN)]))


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (SchemaSpec(), "schema"),
        (replace(GOOD, classes=[ClassSpec("")]), "schema.classes[0].name"),
        (replace(GOOD, classes=[ClassSpec("x" * 101)]), "schema.classes[0].name"),
        (replace(GOOD, objects=[ObjectSpec("cat", ObjectKind.BOX)]), "schema.objects[0].name"),
        (replace(GOOD, classes=[ClassSpec("a"), ClassSpec("a")]), "schema.classes[1].name"),
        (replace(GOOD, classification_mode=ClassificationMode.UNSPECIFIED), "schema.classification_mode"),
        (SchemaSpec(classification_mode=ClassificationMode.MULTI, objects=GOOD.objects), "schema.classes"),
        (replace(GOOD, classification_mode=7), "schema.classification_mode"),
        (replace(GOOD, objects=[ObjectSpec("box", ObjectKind.UNSPECIFIED)]), "schema.objects[0].kind"),
        (replace(GOOD, objects=[ObjectSpec("kp", ObjectKind.KEYPOINTS)]), "schema.objects[0].keypoint_names"),
        (
            replace(GOOD, objects=[ObjectSpec("kp", ObjectKind.KEYPOINTS, keypoint_names=["a", "a"])]),
            "schema.objects[0].keypoint_names[1]",
        ),
        (
            replace(GOOD, objects=[ObjectSpec("b", ObjectKind.BOX, keypoint_names=["a"])]),
            "schema.objects[0].keypoint_names",
        ),
        (
            replace(GOOD, classes=[ClassSpec("c", [AttributeSpec("a", AttributeType.SELECT)])]),
            "schema.classes[0].attributes[0].values",
        ),
        (
            replace(GOOD, classes=[ClassSpec("c", [AttributeSpec("a", AttributeType.SELECT, ["x", "x"])])]),
            "schema.classes[0].attributes[0].values[1]",
        ),
        (
            replace(GOOD, classes=[ClassSpec("c", [AttributeSpec("a", AttributeType.UNSPECIFIED)])]),
            "schema.classes[0].attributes[0].type",
        ),
        (
            replace(
                GOOD,
                classes=[
                    ClassSpec(
                        "c", [AttributeSpec("a", AttributeType.TEXT), AttributeSpec("a", AttributeType.TEXT)]
                    )
                ],
            ),
            "schema.classes[0].attributes[1].name",
        ),
        (
            replace(
                GOOD,
                objects=[ObjectSpec("o", ObjectKind.BOX, attributes=[AttributeSpec("", AttributeType.TEXT)])],
            ),
            "schema.objects[0].attributes[0].name",
        ),
    ],
)
def test_bad_schema_names_the_field(spec: SchemaSpec, field: str) -> None:
    """Every schema rule violation is BAD_SCHEMA and its message names the offending field."""
    error = _bad(spec)
    assert error.metadata["field"] == field
    assert error.message.startswith(field + ":")


def test_project_defaults() -> None:
    """Zero values become redundancy 1, DISAGREEMENT review and min_agreement 0.5; datasets dedupe."""
    spec = validate_project(
        display_name="P",
        redundancy=0,
        review_policy=0,
        min_agreement=0.0,
        datasets=["datasets/a", "datasets/a"],
    )
    assert (spec.redundancy, spec.review_policy, spec.min_agreement) == (1, ReviewPolicy.DISAGREEMENT, 0.5)
    assert spec.dataset_ids == ["a"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"display_name": " "}, "DISPLAY_NAME_REQUIRED"),
        ({"display_name": "x" * 201}, "DISPLAY_NAME_TOO_LONG"),
        ({"redundancy": 11}, "BAD_REDUNDANCY"),
        ({"redundancy": -1}, "BAD_REDUNDANCY"),
        ({"review_policy": 9}, "BAD_REVIEW_POLICY"),
        ({"min_agreement": 1.5}, "BAD_MIN_AGREEMENT"),
        ({"min_agreement": float("nan")}, "BAD_MIN_AGREEMENT"),
        ({"datasets": ["datasets/../x"]}, "BAD_RESOURCE_NAME"),
        ({"datasets": ["projects/a"]}, "BAD_RESOURCE_NAME"),
    ],
)
def test_bad_project_settings(kwargs: dict[str, object], reason: str) -> None:
    """Out-of-range project settings are INVALID_ARGUMENT with a specific reason."""
    base: dict[str, object] = {
        "display_name": "P",
        "redundancy": 3,
        "review_policy": 1,
        "min_agreement": 0.7,
        "datasets": [],
    }
    base.update(kwargs)
    with pytest.raises(InvalidArgument) as info:
        validate_project(**base)  # type: ignore[arg-type]
    assert info.value.reason == reason


def test_lease_duration_bounds() -> None:
    """Unset means 10 minutes; 10 s and 2 h are allowed; outside that is BAD_LEASE_DURATION."""
    assert lease_duration(None) == timedelta(minutes=10)
    assert lease_duration(10) == timedelta(seconds=10)
    assert lease_duration(7200) == timedelta(hours=2)
    for seconds in (9.9, 7201, -5):
        with pytest.raises(InvalidArgument) as info:
            lease_duration(seconds)
        assert info.value.reason == "BAD_LEASE_DURATION"


def test_schema_version_token() -> None:
    """'latest' means newest; numbers are versions; anything else is BAD_RESOURCE_NAME."""
    assert schema_version_of("latest") is None
    assert schema_version_of("3") == 3
    for token in ("0", "abc", "9999999999"):
        with pytest.raises(InvalidArgument):
            schema_version_of(token)


def test_expired_lease_is_not_held() -> None:
    """A lapsed lease reads as QUEUED and is held by nobody; a live one only by its worker and id."""
    now = datetime.now(UTC)
    past, future = now - timedelta(seconds=1), now + timedelta(minutes=1)
    assert effective_state(TaskState.LEASED, past, now) == TaskState.QUEUED
    assert effective_state(TaskState.LEASED, future, now) == TaskState.LEASED
    held = {"state": TaskState.LEASED, "lease_id": "L", "lease_worker": "w", "now": now}
    assert lease_is_held(**held, lease_expire_time=future, presented_lease_id="L", worker="w")  # type: ignore[arg-type]
    assert not lease_is_held(**held, lease_expire_time=past, presented_lease_id="L", worker="w")  # type: ignore[arg-type]
    assert not lease_is_held(**held, lease_expire_time=future, presented_lease_id="L", worker="x")  # type: ignore[arg-type]
    assert not lease_is_held(**held, lease_expire_time=future, presented_lease_id="", worker="w")  # type: ignore[arg-type]


def test_pick_better_orders_by_priority_then_creation() -> None:
    """Higher priority wins, then the earlier task; a missing candidate loses."""
    assert pick_better((100, 9), (0, 1)) == 0
    assert pick_better((0, 5), (0, 2)) == 1
    assert pick_better(None, (0, 2)) == 1
    assert pick_better((0, 2), None) == 0
