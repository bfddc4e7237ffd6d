"""Stage order, who may decide each stage, and reason codes (qa/stages.py)."""

from __future__ import annotations

import pytest
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.auth import (
    ADMIN,
    ANNOTATOR,
    EXPERT_REVIEWER,
    MANAGER,
    REVIEWER,
    VENDOR_ADMIN,
    VENDOR_WORKER,
)
from annocloud_server.common.errors import InvalidArgument, PermissionDenied
from annocloud_server.qa import stages

PEER, MANAGER_STAGE, EXPERT, AUDIT = stages.PEER, stages.MANAGER_STAGE, stages.EXPERT, stages.AUDIT


def test_configured_stages_keep_order_and_drop_expert_audit_and_duplicates() -> None:
    """Only PEER / MANAGER are configured stages, in the order given, once each."""
    settings = tasks_pb2.QualitySettings(review_stages=[MANAGER_STAGE, EXPERT, PEER, MANAGER_STAGE, AUDIT])
    assert stages.configured_stages(settings) == [MANAGER_STAGE, PEER]


def test_next_stage_follows_the_order_and_expert_audit_are_final() -> None:
    """PEER passes to MANAGER, MANAGER is last; EXPERT and AUDIT always decide finally."""
    order = [PEER, MANAGER_STAGE]
    assert stages.next_stage(PEER, order) == MANAGER_STAGE
    assert stages.next_stage(MANAGER_STAGE, order) is None
    assert stages.next_stage(EXPERT, order) is None
    assert stages.next_stage(AUDIT, order) is None
    assert stages.next_stage(PEER, []) is None


@pytest.mark.parametrize(
    ("stage", "allowed", "refused"),
    [
        (PEER, [REVIEWER, MANAGER, ADMIN], [ANNOTATOR, EXPERT_REVIEWER, VENDOR_WORKER]),
        (MANAGER_STAGE, [MANAGER, ADMIN], [REVIEWER, ANNOTATOR]),
        (EXPERT, [EXPERT_REVIEWER, ADMIN], [REVIEWER, MANAGER]),
        (AUDIT, [MANAGER, ADMIN, EXPERT_REVIEWER], [REVIEWER, VENDOR_ADMIN]),
    ],
)
def test_roles_per_stage(stage: int, allowed: list[int], refused: list[int]) -> None:
    """Each stage admits exactly its roles."""
    for role in allowed:
        stages.check_decider(roles=[role], subject="user:r", stage=stage, annotators=set())
    for role in refused:
        with pytest.raises(PermissionDenied):
            stages.check_decider(roles=[role], subject="user:r", stage=stage, annotators=set())


def test_a_peer_cannot_review_own_work_but_a_manager_stage_can() -> None:
    """OWN_WORK at PEER when the reviewer annotated the item; not checked at later stages."""
    with pytest.raises(PermissionDenied) as info:
        stages.check_decider(roles=[REVIEWER], subject="user:w1", stage=PEER, annotators={"user:w1"})
    assert info.value.reason == "OWN_WORK"
    stages.check_decider(roles=[MANAGER], subject="user:w1", stage=MANAGER_STAGE, annotators={"user:w1"})


def test_reason_codes_against_the_taxonomy() -> None:
    """With a taxonomy the code is required and must be listed; without one it is free."""
    taxonomy = ["omission", "wrong_class"]
    assert stages.check_reason_code(" omission ", taxonomy) == "omission"
    with pytest.raises(InvalidArgument) as info:
        stages.check_reason_code("", taxonomy)
    assert info.value.reason == "REASON_CODE_REQUIRED"
    with pytest.raises(InvalidArgument) as info:
        stages.check_reason_code("grammar", taxonomy)
    assert info.value.reason == "BAD_REASON_CODE"
    assert "omission, wrong_class" in str(info.value)
    assert stages.check_reason_code("anything", []) == "anything"
    assert stages.check_reason_code("", []) == ""


def test_escalation_note_required_and_bounded() -> None:
    """An empty or over-long note is NOTE_REQUIRED."""
    assert stages.check_note(" why ") == "why"
    for note in ("  ", "x" * 1001):
        with pytest.raises(InvalidArgument) as info:
            stages.check_note(note)
        assert info.value.reason == "NOTE_REQUIRED"
