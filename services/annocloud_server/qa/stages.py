"""Review stages: their order in a project, who may decide each, and the rules for reason codes.

Pure: plain values and proto enums in, domain errors out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from annocloud.common.v1 import common_pb2
from annocloud.tasks.v1 import tasks_pb2

from annocloud_server.common.auth import (
    ADMIN,
    EXPERT_REVIEWER,
    MANAGER,
    REVIEWER,
)
from annocloud_server.common.errors import InvalidArgument, PermissionDenied

PEER = tasks_pb2.REVIEW_STAGE_PEER
MANAGER_STAGE = tasks_pb2.REVIEW_STAGE_MANAGER
EXPERT = tasks_pb2.REVIEW_STAGE_EXPERT
AUDIT = tasks_pb2.REVIEW_STAGE_AUDIT

EXPERTS = (ADMIN, EXPERT_REVIEWER)
AUDITORS = (ADMIN, MANAGER, EXPERT_REVIEWER)
DECIDERS = (ADMIN, MANAGER, REVIEWER, EXPERT_REVIEWER)
"""Everyone who may decide some stage: the gate in front of approve, reject and escalate."""
QUALITY_VIEWERS = (ADMIN, MANAGER, REVIEWER)
"""The project's own organization roles that see every worker's quality (plain annotators do not)."""

STAGE_ROLES: dict[int, tuple[int, ...]] = {
    PEER: (ADMIN, MANAGER, REVIEWER),
    MANAGER_STAGE: (ADMIN, MANAGER),
    EXPERT: EXPERTS,
    AUDIT: AUDITORS,
}

MAX_NOTE_CHARS = 1000


def configured_stages(settings: tasks_pb2.QualitySettings) -> list[int]:
    """The project's ordered stages an aggregated item passes (PEER / MANAGER; duplicates dropped).

    EXPERT is reached only by escalation and AUDIT only by sampling, so they are ignored here.
    """
    stages: list[int] = []
    for stage in settings.review_stages:
        if stage in (PEER, MANAGER_STAGE) and stage not in stages:
            stages.append(int(stage))
    return stages


def next_stage(stage: int, stages: Sequence[int]) -> int | None:
    """The stage after ``stage`` in the project's order; None when ``stage`` decides finally."""
    if stage in (EXPERT, AUDIT) or stage not in stages:
        return None
    index = list(stages).index(stage)
    return stages[index + 1] if index + 1 < len(stages) else None


def check_decider(*, roles: Collection[int], subject: str, stage: int, annotators: Collection[str]) -> None:
    """PermissionDenied unless a caller with ``roles`` may decide a review at ``stage``.

    A peer reviewer must not judge their own work (reason OWN_WORK).
    """
    allowed = STAGE_ROLES.get(stage, STAGE_ROLES[PEER])
    if not set(roles) & set(allowed):
        wanted = ", ".join(common_pb2.Role.Name(r) for r in allowed)  # type: ignore[arg-type]
        name = tasks_pb2.ReviewStage.Name(stage)  # type: ignore[arg-type]
        raise PermissionDenied(f"a {name} review needs one of the roles: {wanted}", reason="ROLE_REQUIRED")
    if stage == PEER and subject in annotators:
        raise PermissionDenied("a peer reviewer cannot decide on their own annotation", reason="OWN_WORK")


def check_reason_code(code: str, taxonomy: Sequence[str]) -> str:
    """The reason code to record: one of ``taxonomy`` when it is non-empty, free text otherwise."""
    code = code.strip()
    if not taxonomy:
        if len(code) > 64:
            raise InvalidArgument("reason_code is at most 64 characters", reason="BAD_REASON_CODE")
        return code
    if not code:
        allowed = ", ".join(taxonomy)
        raise InvalidArgument(f"reason_code is required; one of: {allowed}", reason="REASON_CODE_REQUIRED")
    if code not in taxonomy:
        allowed = ", ".join(taxonomy)
        raise InvalidArgument(
            f"reason_code {code!r} is not in the project's error taxonomy; one of: {allowed}",
            reason="BAD_REASON_CODE",
        )
    return code


def check_note(note: str) -> str:
    """An escalation note: required, at most MAX_NOTE_CHARS."""
    if not note.strip() or len(note) > MAX_NOTE_CHARS:
        raise InvalidArgument(
            f"note is required and at most {MAX_NOTE_CHARS} characters", reason="NOTE_REQUIRED"
        )
    return note.strip()
