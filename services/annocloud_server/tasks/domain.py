"""Pure rules of the tasks service: project settings, label schema validation, leases.

Nothing here touches gRPC, SQLAlchemy or the bus; the servicer hands in plain values and gets plain
values (or a domain error) back. Enum numbers match the proto enums of ``annocloud.tasks.v1``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.paging import parse_name

MAX_DISPLAY_NAME = 200
MAX_LABEL_NAME = 100
MAX_LABELS = 1000
MAX_ATTRIBUTES = 100
MAX_VALUES = 1000
MAX_INSTRUCTIONS = 100_000
MAX_REQUEST_ID = 128
MAX_REDUNDANCY = 10
DEFAULT_MIN_AGREEMENT = 0.5
REWORK_PRIORITY = 100
LABEL_PRIORITY = 0

DEFAULT_LEASE = timedelta(minutes=10)
MIN_LEASE = timedelta(seconds=10)
MAX_LEASE = timedelta(hours=2)


class ClassificationMode(IntEnum):
    UNSPECIFIED = 0
    SINGLE = 1
    MULTI = 2


class ObjectKind(IntEnum):
    UNSPECIFIED = 0
    BOX = 1
    POLYGON = 2
    KEYPOINTS = 3
    TEXT_SPAN = 4


class AttributeType(IntEnum):
    UNSPECIFIED = 0
    SELECT = 1
    BOOLEAN = 2
    TEXT = 3
    NUMBER = 4


class ReviewPolicy(IntEnum):
    UNSPECIFIED = 0
    DISAGREEMENT = 1
    ALL = 2


class TaskState(IntEnum):
    UNSPECIFIED = 0
    QUEUED = 1
    LEASED = 2
    COMPLETED = 3
    CANCELLED = 4


class TaskKind(IntEnum):
    UNSPECIFIED = 0
    LABEL = 1
    REWORK = 2


@dataclass(frozen=True)
class AttributeSpec:
    name: str
    type: int
    values: list[str] = field(default_factory=list)
    required: bool = False


@dataclass(frozen=True)
class ClassSpec:
    name: str
    attributes: list[AttributeSpec] = field(default_factory=list)


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    kind: int
    keypoint_names: list[str] = field(default_factory=list)
    attributes: list[AttributeSpec] = field(default_factory=list)


@dataclass(frozen=True)
class SchemaSpec:
    """The content of one label schema version (name, version and time are assigned)."""

    classification_mode: int = 0
    classes: list[ClassSpec] = field(default_factory=list)
    allow_not_sure: bool = False
    objects: list[ObjectSpec] = field(default_factory=list)
    instructions: str = ""


@dataclass(frozen=True)
class ProjectSpec:
    """Validated, defaulted settings of a new project."""

    display_name: str
    redundancy: int
    review_policy: int
    min_agreement: float
    dataset_ids: list[str]


def _bad_schema(path: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {problem}", reason="BAD_SCHEMA", metadata={"field": path})


def _check_name(path: str, name: str, limit: int = MAX_LABEL_NAME) -> None:
    if not name or not name.strip():
        raise _bad_schema(path, "must not be empty")
    if len(name) > limit:
        raise _bad_schema(path, f"must be at most {limit} characters")


def _check_unique_names(path: str, names: list[str], what: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        _check_name(f"{path}[{index}]", name)
        if name in seen:
            raise _bad_schema(f"{path}[{index}]", f"duplicate {what} {name!r}")
        seen.add(name)


def _validate_attributes(path: str, attributes: list[AttributeSpec]) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        raise _bad_schema(path, f"at most {MAX_ATTRIBUTES} attributes are allowed")
    seen: set[str] = set()
    for index, attribute in enumerate(attributes):
        here = f"{path}[{index}]"
        _check_name(f"{here}.name", attribute.name)
        if attribute.name in seen:
            raise _bad_schema(f"{here}.name", f"duplicate attribute name {attribute.name!r}")
        seen.add(attribute.name)
        if attribute.type not in set(AttributeType) or attribute.type == AttributeType.UNSPECIFIED:
            raise _bad_schema(f"{here}.type", "must be SELECT, BOOLEAN, TEXT or NUMBER")
        if attribute.type == AttributeType.SELECT:
            if not attribute.values:
                raise _bad_schema(f"{here}.values", "a SELECT attribute needs at least one value")
            if len(attribute.values) > MAX_VALUES:
                raise _bad_schema(f"{here}.values", f"at most {MAX_VALUES} values are allowed")
            _check_unique_names(f"{here}.values", attribute.values, "value")
        elif attribute.values:
            raise _bad_schema(f"{here}.values", "only SELECT attributes have values")


def validate_schema(spec: SchemaSpec, *, path: str = "schema") -> None:
    """Raises INVALID_ARGUMENT (reason BAD_SCHEMA, message naming the field) unless ``spec`` is usable."""
    if not spec.classes and not spec.objects:
        raise _bad_schema(path, "needs at least one class or object label")
    if len(spec.classes) + len(spec.objects) > MAX_LABELS:
        raise _bad_schema(path, f"at most {MAX_LABELS} labels are allowed")
    if len(spec.instructions) > MAX_INSTRUCTIONS:
        raise _bad_schema(f"{path}.instructions", f"must be at most {MAX_INSTRUCTIONS} characters")
    mode = spec.classification_mode
    if mode not in set(ClassificationMode):
        raise _bad_schema(f"{path}.classification_mode", f"unknown value {mode}")
    if mode == ClassificationMode.UNSPECIFIED and spec.classes:
        raise _bad_schema(f"{path}.classification_mode", "must be SINGLE or MULTI when classes are given")
    if mode != ClassificationMode.UNSPECIFIED and not spec.classes:
        raise _bad_schema(f"{path}.classes", "SINGLE and MULTI classification need at least one class")
    seen: dict[str, str] = {}
    labels = [(f"{path}.classes[{i}]", c.name) for i, c in enumerate(spec.classes)]
    labels += [(f"{path}.objects[{i}]", o.name) for i, o in enumerate(spec.objects)]
    for here, name in labels:
        _check_name(f"{here}.name", name)
        if name in seen:
            raise _bad_schema(f"{here}.name", f"label name {name!r} is already used by {seen[name]}")
        seen[name] = here
    for index, klass in enumerate(spec.classes):
        _validate_attributes(f"{path}.classes[{index}].attributes", klass.attributes)
    for index, obj in enumerate(spec.objects):
        here = f"{path}.objects[{index}]"
        if obj.kind not in set(ObjectKind) or obj.kind == ObjectKind.UNSPECIFIED:
            raise _bad_schema(f"{here}.kind", "must be BOX, POLYGON, KEYPOINTS or TEXT_SPAN")
        if obj.kind == ObjectKind.KEYPOINTS:
            if not obj.keypoint_names:
                raise _bad_schema(
                    f"{here}.keypoint_names", "KEYPOINTS labels need at least one keypoint name"
                )
            if len(obj.keypoint_names) > MAX_VALUES:
                raise _bad_schema(f"{here}.keypoint_names", f"at most {MAX_VALUES} keypoints are allowed")
            _check_unique_names(f"{here}.keypoint_names", obj.keypoint_names, "keypoint name")
        elif obj.keypoint_names:
            raise _bad_schema(f"{here}.keypoint_names", "only KEYPOINTS labels have keypoint names")
        _validate_attributes(f"{here}.attributes", obj.attributes)


def _bad(field_name: str, problem: str, reason: str) -> InvalidArgument:
    return InvalidArgument(f"{field_name}: {problem}", reason=reason, metadata={"field": field_name})


def dataset_id_of(name: str, *, field_name: str = "dataset") -> str:
    """The id in a ``datasets/{dataset}`` name; INVALID_ARGUMENT naming the field otherwise."""
    try:
        (dataset_id,) = parse_name(name, "datasets/{}")
    except InvalidArgument as exc:
        raise _bad(field_name, exc.message, "BAD_RESOURCE_NAME") from exc
    return dataset_id


def validate_project(
    *, display_name: str, redundancy: int, review_policy: int, min_agreement: float, datasets: list[str]
) -> ProjectSpec:
    """Checks and defaults the settings of a new project (0 → defaults)."""
    if not display_name.strip():
        raise _bad("project.display_name", "is required", "DISPLAY_NAME_REQUIRED")
    if len(display_name) > MAX_DISPLAY_NAME:
        raise _bad(
            "project.display_name", f"must be at most {MAX_DISPLAY_NAME} characters", "DISPLAY_NAME_TOO_LONG"
        )
    redundancy = redundancy or 1
    if not 1 <= redundancy <= MAX_REDUNDANCY:
        raise _bad("project.redundancy", f"must be between 1 and {MAX_REDUNDANCY}", "BAD_REDUNDANCY")
    if review_policy not in set(ReviewPolicy):
        raise _bad("project.review_policy", f"unknown value {review_policy}", "BAD_REVIEW_POLICY")
    review_policy = review_policy or ReviewPolicy.DISAGREEMENT
    if math.isnan(min_agreement) or not 0.0 <= min_agreement <= 1.0:
        raise _bad("project.min_agreement", "must be between 0 and 1", "BAD_MIN_AGREEMENT")
    min_agreement = min_agreement or DEFAULT_MIN_AGREEMENT
    dataset_ids: list[str] = []
    for index, name in enumerate(datasets):
        dataset_id = dataset_id_of(name, field_name=f"project.datasets[{index}]")
        if dataset_id not in dataset_ids:
            dataset_ids.append(dataset_id)
    return ProjectSpec(display_name, redundancy, int(review_policy), min_agreement, dataset_ids)


def validate_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID:
        raise _bad("request_id", f"must be at most {MAX_REQUEST_ID} characters", "BAD_REQUEST_ID")


def lease_duration(seconds: float | None) -> timedelta:
    """The lease length asked for (None or 0 → the default); INVALID_ARGUMENT outside 10 s..2 h."""
    if not seconds:
        return DEFAULT_LEASE
    duration = timedelta(seconds=seconds)
    if not MIN_LEASE <= duration <= MAX_LEASE:
        raise _bad("lease_duration", "must be between 10 seconds and 2 hours", "BAD_LEASE_DURATION")
    return duration


def schema_version_of(token: str) -> int | None:
    """The version in the last segment of a schema name; None for ``latest``."""
    if token == "latest":  # noqa: S105 - a keyword, not a password
        return None
    if not token.isdigit() or len(token) > 9 or int(token) < 1:
        raise _bad("name", "schema version must be a positive number or 'latest'", "BAD_RESOURCE_NAME")
    return int(token)


def effective_state(state: int, lease_expire_time: datetime | None, now: datetime) -> TaskState:
    """A LEASED task whose lease ran out is QUEUED, even before the sweeper returns it."""
    if state == TaskState.LEASED and (lease_expire_time is None or lease_expire_time <= now):
        return TaskState.QUEUED
    return TaskState(state)


def lease_is_held(
    *,
    state: int,
    lease_id: str | None,
    lease_worker: str | None,
    lease_expire_time: datetime | None,
    presented_lease_id: str,
    worker: str,
    now: datetime,
) -> bool:
    """Whether ``worker`` holds the live lease ``presented_lease_id``."""
    return (
        effective_state(state, lease_expire_time, now) == TaskState.LEASED
        and bool(presented_lease_id)
        and lease_id == presented_lease_id
        and lease_worker == worker
    )


def wants_label_tasks(near_duplicate_of: str) -> bool:
    """Near-duplicates of an item already in the dataset are not labeled again."""
    return not near_duplicate_of


def pick_better(a: tuple[int, int] | None, b: tuple[int, int] | None) -> int:
    """0 if candidate ``a`` (priority, seq) goes first, 1 if ``b`` does; ``None`` candidates lose."""
    if a is None:
        return 1
    if b is None:
        return 0
    return 0 if (-a[0], a[1]) <= (-b[0], b[1]) else 1


_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_RETRAIN_EVERY = 10_000


@dataclass(frozen=True)
class PrelabelSpec:
    model: str
    label: str
    min_score: float


def validate_model_assist(
    *,
    prelabel: list[PrelabelSpec],
    strategy: int,
    retrain_every: int,
    cold_start: int,
    embedding_model: str,
    schema: SchemaSpec,
    path: str = "project.model_assist",
) -> None:
    """Pre-label models must name Triton models and map onto the schema's BOX labels; the
    active-learning settings must be known values. INVALID_ARGUMENT naming the field."""
    boxes = {o.name for o in schema.objects if o.kind == ObjectKind.BOX}
    for index, spec in enumerate(prelabel):
        here = f"{path}.prelabel[{index}]"
        if not _MODEL_NAME.match(spec.model):
            raise _bad(f"{here}.model", "must be a Triton model name", "BAD_MODEL_ASSIST")
        if spec.label not in boxes:
            known = ", ".join(sorted(boxes)) or "none"
            raise _bad(
                f"{here}.label", f"must be a BOX label of the schema (have: {known})", "BAD_MODEL_ASSIST"
            )
        if math.isnan(spec.min_score) or not 0.0 <= spec.min_score <= 1.0:
            raise _bad(f"{here}.min_score", "must be between 0 and 1", "BAD_MODEL_ASSIST")
    if not 0 <= strategy <= 6:
        raise _bad(f"{path}.strategy", f"unknown value {strategy}", "BAD_MODEL_ASSIST")
    if not 0 <= cold_start <= 2:
        raise _bad(f"{path}.cold_start", f"unknown value {cold_start}", "BAD_MODEL_ASSIST")
    if not 0 <= retrain_every <= MAX_RETRAIN_EVERY:
        raise _bad(f"{path}.retrain_every", f"must be between 1 and {MAX_RETRAIN_EVERY}", "BAD_MODEL_ASSIST")
    if embedding_model and not _MODEL_NAME.match(embedding_model):
        raise _bad(f"{path}.embedding_model", "must be a Triton model name", "BAD_MODEL_ASSIST")
