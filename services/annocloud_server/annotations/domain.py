"""Rules of the annotations service that need no storage and no network."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime

from annocloud.annotations.v1 import annotations_pb2
from annocloud.tasks.v1 import tasks_pb2

from annocloud_server.common.auth import REVIEWERS, Principal
from annocloud_server.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from annocloud_server.common.labels import ItemFacts, validate_structure
from annocloud_server.common.paging import new_id

MAX_REQUEST_ID = 128
MAX_MODEL_CHARS = 256


def check_lease(task: tasks_pb2.Task, *, lease_id: str, worker: str, now: datetime) -> None:
    """The caller must hold the task's current, unexpired lease."""
    lease = task.lease
    held = (
        task.state == tasks_pb2.TASK_STATE_LEASED
        and task.HasField("lease")
        and lease.lease_id == lease_id
        and lease.worker == worker
    )
    if held and lease.HasField("expire_time"):
        held = lease.expire_time.ToDatetime(tzinfo=now.tzinfo) > now
    if not held:
        raise FailedPrecondition(f"you do not hold a current lease on {task.name}", reason="LEASE_NOT_HELD")


def item_facts(task: tasks_pb2.Task) -> ItemFacts:
    return ItemFacts(
        media_type=task.media_type, width=task.item_width, height=task.item_height, text=task.item_text
    )


def check_may_revise(*, subject: str, roles: Sequence[int], annotator: str) -> None:
    """Only the annotator or a reviewer may edit an annotation."""
    if subject != annotator and not set(roles) & set(REVIEWERS):
        raise PermissionDenied(
            "only the annotator or a reviewer may edit this annotation", reason="NOT_ANNOTATOR"
        )


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument(
            f"request_id is longer than {MAX_REQUEST_ID} characters", reason="BAD_REQUEST_ID"
        )


def check_prediction(prediction: annotations_pb2.Prediction) -> None:
    """A prediction names its model, has a score in [0, 1] and structurally sound labels."""
    if not prediction.model or len(prediction.model) > MAX_MODEL_CHARS:
        raise InvalidArgument(f"prediction.model is required (≤ {MAX_MODEL_CHARS} chars)", reason="BAD_MODEL")
    if len(prediction.model_version) > MAX_MODEL_CHARS:
        raise InvalidArgument(
            f"prediction.model_version is longer than {MAX_MODEL_CHARS}", reason="BAD_MODEL"
        )
    if not math.isfinite(prediction.score) or not 0.0 <= prediction.score <= 1.0:
        raise InvalidArgument(
            f"prediction.score must be in [0, 1] (got {prediction.score})", reason="BAD_SCORE"
        )
    validate_structure(prediction.labels)


def new_etag() -> str:
    return new_id()[:16]


def request_key(principal: Principal, tenant: str, request_id: str) -> str:
    """The idempotency key stored for ``request_id``: as given in the caller's own organization; for
    a vendor's worker, namespaced by their organization (two vendors may pick the same ids)."""
    if not request_id or principal.organization_id == tenant:
        return request_id
    check_request_id(request_id)
    digest = hashlib.sha256(f"{principal.organization_id}\n{request_id}".encode()).hexdigest()
    return f"vendor:{digest}"


def handle_seconds(task: tasks_pb2.Task, now: datetime) -> float:
    """Seconds from the lease to the submit (0 when the lease time is unknown)."""
    if not task.lease.HasField("lease_time"):
        return 0.0
    return max(0.0, (now - task.lease.lease_time.ToDatetime(tzinfo=now.tzinfo)).total_seconds())
