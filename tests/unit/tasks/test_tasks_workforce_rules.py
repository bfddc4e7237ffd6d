"""The pure workforce rules: quality settings, eligibility, tiers, rates in force, reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from annocloud_server.common.errors import InvalidArgument, PermissionDenied
from annocloud_server.tasks import workforce
from annocloud_server.tasks.workforce import Entry, Overlap, QualitySpec, Rate, SkillSet

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def eligibility(**overrides: object) -> workforce.Eligibility:
    args: dict[str, object] = {
        "level": 2,
        "state_suspended": False,
        "skills": SkillSet([1], [1], ["en"]),
        "grant_min_level": 1,
        "schema_object_kinds": [1],
        "language": "en",
        "qualification_gold_tasks": 0,
        "min_worker_accuracy": 0.0,
        "gold_answered": 0,
        "gold_correct": 0,
    }
    args.update(overrides)
    return workforce.check_eligibility(**args)  # type: ignore[arg-type]


def test_quality_settings_are_checked_field_by_field() -> None:
    """Each bad setting raises INVALID_ARGUMENT naming its field; good ones pass unchanged."""
    good = QualitySpec(
        review_stages=[1, 2], audit_rate=0.1, overlap=Overlap(2, 5, 0.9), error_taxonomy=[("wrong_class", "")]
    )
    assert workforce.validate_quality(good) is good
    cases = {
        "project.quality.review_stages[1]": QualitySpec(review_stages=[1, 1]),
        "project.quality.audit_rate": QualitySpec(audit_rate=float("nan")),
        "project.quality.gold_rate": QualitySpec(gold_rate=-0.1),
        "project.quality.dynamic_overlap.max_labels": QualitySpec(overlap=Overlap(3, 11, 0.9)),
        "project.quality.dynamic_overlap.confidence_threshold": QualitySpec(overlap=Overlap(1, 2, 1.0)),
        "project.quality.error_taxonomy[1].code": QualitySpec(error_taxonomy=[("a", ""), ("a", "")]),
        "project.quality.language": QualitySpec(language="english please"),
    }
    for field_name, spec in cases.items():
        with pytest.raises(InvalidArgument) as info:
            workforce.validate_quality(spec)
        assert info.value.message.startswith(field_name), info.value.message


def test_eligibility_refuses_with_the_reason_a_person_needs() -> None:
    """Suspended, under the grant's level, missing object kinds or language, low gold accuracy."""
    assert eligibility() == workforce.Eligibility(max_tier=2, media_types=(1,), gold_only=False)
    for overrides, reason in (
        ({"state_suspended": True}, "WORKER_SUSPENDED"),
        ({"grant_min_level": 3}, "LEVEL_TOO_LOW"),
        ({"schema_object_kinds": [1, 3]}, "SKILLS_MISSING"),
        ({"language": "de"}, "SKILLS_MISSING"),
        ({"min_worker_accuracy": 0.7, "gold_answered": 5, "gold_correct": 2}, "QUALITY_TOO_LOW"),
    ):
        with pytest.raises(PermissionDenied) as info:
            eligibility(**overrides)
        assert info.value.reason == reason


def test_qualifying_workers_get_gold_only_and_unregistered_in_house_get_everything() -> None:
    """Fewer gold answers than the qualification asks: gold only; no skills record: no media filter."""
    assert eligibility(
        qualification_gold_tasks=3, gold_answered=2, gold_correct=0, min_worker_accuracy=0.9
    ).gold_only
    assert not eligibility(
        qualification_gold_tasks=3, gold_answered=3, gold_correct=3, min_worker_accuracy=0.5
    ).gold_only
    anyone = eligibility(skills=None, level=workforce.UNREGISTERED_IN_HOUSE_LEVEL, schema_object_kinds=[4])
    assert (anyone.media_types, anyone.max_tier) == (None, 5)


def test_difficulty_maps_to_tiers_one_to_five() -> None:
    """0 → 1, 0.2 → 1, 0.21 → 2, 0.5 → 3, 1.0 → 5; NaN and out-of-range values clamp."""
    assert [workforce.tier_for_difficulty(d) for d in (0.0, 0.2, 0.21, 0.5, 0.99, 1.0, 7.0, -1.0)] == [
        1,
        1,
        2,
        3,
        5,
        5,
        5,
        1,
    ]
    assert workforce.tier_for_difficulty(float("nan")) == 1


def rate(rate_id: str, amount: int, start: datetime, tier: int = 1) -> Rate:
    return Rate(rate_id, 1, tier, amount, "USD", start, None)


def test_rate_in_force_is_the_newest_effective_at_the_time() -> None:
    """Before any rate: none; between changes: the earlier one; other tiers never apply."""
    rates = [rate("a", 10, T0), rate("b", 20, T0 + timedelta(hours=1)), rate("c", 99, T0, tier=2)]
    assert workforce.rate_in_force(rates, task_kind=1, tier=1, at=T0 - timedelta(seconds=1)) is None
    assert workforce.rate_in_force(rates, task_kind=1, tier=1, at=T0 + timedelta(minutes=59)).rate_id == "a"  # type: ignore[union-attr]
    assert workforce.rate_in_force(rates, task_kind=1, tier=1, at=T0 + timedelta(hours=2)).rate_id == "b"  # type: ignore[union-attr]


def test_reconcile_finds_wrong_accruals_and_orphan_reversals() -> None:
    """A ledger derived from the rates reconciles; a wrong amount or an unmatched reversal does not."""
    rates = [rate("a", 10, T0), rate("b", 20, T0 + timedelta(hours=1))]
    good = [
        Entry(workforce.ACCRUAL, "t1", 1, 1, 1, 10, "a", T0 + timedelta(minutes=5)),
        Entry(workforce.ACCRUAL, "t2", 1, 1, 1, 20, "b", T0 + timedelta(hours=3)),
        Entry(workforce.REVERSAL, "t2", 1, 1, 1, -20, "b", T0 + timedelta(hours=4)),
        Entry(workforce.BONUS, "", 1, 0, 0, 500, "", T0),
    ]
    assert workforce.reconcile(good, rates) == []
    wrong = [*good[:1], Entry(workforce.ACCRUAL, "t2", 1, 1, 1, 10, "a", T0 + timedelta(hours=3))]
    assert len(workforce.reconcile(wrong, rates)) == 1
    orphan = [*good, Entry(workforce.REVERSAL, "t9", 1, 1, 1, -10, "a", T0)]
    assert "no accrual" in workforce.reconcile(orphan, rates)[0]
