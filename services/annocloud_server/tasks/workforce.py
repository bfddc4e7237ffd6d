"""Workforce rules, pure: quality settings, worker records, routing eligibility, difficulty tiers,
pay rates in force and the ledger reconciliation.

No grpc, SQLAlchemy or Kafka here; the store and servicers call these with plain values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from annocloud_server.common.errors import InvalidArgument, PermissionDenied

MIN_LEVEL = 1
MAX_LEVEL = 5
MAX_TIER = 5
# Posterior mean accuracy on gold with a Beta(2, 1) prior: a worker with no gold answers reads 2/3.
GOLD_PRIOR = (2, 1)
# In-house annotators without a worker record keep working as before the workforce existed:
# every tier, every skill.
UNREGISTERED_IN_HOUSE_LEVEL = MAX_LEVEL
MAX_REASON = 1000
MAX_AMOUNT_MICROS = 10**15

_WORKER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")

# ReviewStage values (tasks.proto) a project may list; EXPERT comes by escalation, AUDIT by sampling.
STAGE_PEER = 1
STAGE_MANAGER = 2
CONFIGURABLE_STAGES = (STAGE_PEER, STAGE_MANAGER)


def _bad(field_name: str, problem: str, reason: str) -> InvalidArgument:
    return InvalidArgument(f"{field_name}: {problem}", reason=reason, metadata={"field": field_name})


def _rate(value: float, field_name: str, reason: str) -> None:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise _bad(field_name, "must be between 0 and 1", reason)


@dataclass
class Overlap:
    min_labels: int
    max_labels: int
    confidence_threshold: float


@dataclass
class QualitySpec:
    """``QualitySettings`` as plain values."""

    review_stages: list[int] = field(default_factory=list)
    audit_rate: float = 0.0
    error_taxonomy: list[tuple[str, str]] = field(default_factory=list)
    overlap: Overlap | None = None
    gold_rate: float = 0.0
    qualification_gold_tasks: int = 0
    min_worker_accuracy: float = 0.0
    aggregation: int = 0
    language: str = ""


def validate_quality(spec: QualitySpec, *, path: str = "project.quality") -> QualitySpec:
    """Checks a project's quality settings; INVALID_ARGUMENT naming the field."""
    seen: set[int] = set()
    for index, stage in enumerate(spec.review_stages):
        if stage not in CONFIGURABLE_STAGES:
            raise _bad(f"{path}.review_stages[{index}]", "must be PEER or MANAGER", "BAD_REVIEW_STAGES")
        if stage in seen:
            raise _bad(f"{path}.review_stages[{index}]", "is listed twice", "BAD_REVIEW_STAGES")
        seen.add(stage)
    _rate(spec.audit_rate, f"{path}.audit_rate", "BAD_AUDIT_RATE")
    _rate(spec.gold_rate, f"{path}.gold_rate", "BAD_GOLD_RATE")
    _rate(spec.min_worker_accuracy, f"{path}.min_worker_accuracy", "BAD_MIN_WORKER_ACCURACY")
    codes: set[str] = set()
    for index, (code, description) in enumerate(spec.error_taxonomy):
        if not _CODE.match(code):
            raise _bad(
                f"{path}.error_taxonomy[{index}].code",
                "must be lower_snake_case, 1 to 64 characters",
                "BAD_ERROR_TAXONOMY",
            )
        if code in codes:
            raise _bad(
                f"{path}.error_taxonomy[{index}].code", f"{code!r} is listed twice", "BAD_ERROR_TAXONOMY"
            )
        if len(description) > MAX_REASON:
            raise _bad(
                f"{path}.error_taxonomy[{index}].description",
                f"must be at most {MAX_REASON} characters",
                "BAD_ERROR_TAXONOMY",
            )
        codes.add(code)
    if spec.overlap is not None:
        o = spec.overlap
        here = f"{path}.dynamic_overlap"
        if not 1 <= o.min_labels <= 10:
            raise _bad(f"{here}.min_labels", "must be between 1 and 10", "BAD_DYNAMIC_OVERLAP")
        if not o.min_labels <= o.max_labels <= 10:
            raise _bad(f"{here}.max_labels", "must be between min_labels and 10", "BAD_DYNAMIC_OVERLAP")
        if math.isnan(o.confidence_threshold) or not 0.0 < o.confidence_threshold < 1.0:
            raise _bad(f"{here}.confidence_threshold", "must be in (0, 1)", "BAD_DYNAMIC_OVERLAP")
    if not 0 <= spec.qualification_gold_tasks <= 100:
        raise _bad(f"{path}.qualification_gold_tasks", "must be between 0 and 100", "BAD_QUALIFICATION")
    if spec.aggregation not in (0, 1, 2):
        raise _bad(f"{path}.aggregation", f"unknown value {spec.aggregation}", "BAD_AGGREGATION")
    if spec.language and not _LANGUAGE.match(spec.language):
        raise _bad(f"{path}.language", "must be a BCP 47 tag such as 'en' or 'pt-BR'", "BAD_LANGUAGE")
    return spec


# --- workers --------------------------------------------------------------------------------------


@dataclass
class SkillSet:
    media_types: list[int] = field(default_factory=list)
    object_kinds: list[int] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)


def validate_worker_id(worker_id: str) -> str:
    if not _WORKER_ID.match(worker_id):
        raise _bad(
            "worker_id", "must be lower-case letters, digits and '-', 1 to 63 characters", "BAD_WORKER_ID"
        )
    return worker_id


def validate_level(level: int, field_name: str = "worker.level") -> int:
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise _bad(field_name, f"must be between {MIN_LEVEL} and {MAX_LEVEL}", "BAD_LEVEL")
    return level


def validate_skills(skills: SkillSet, *, known_media: Iterable[int], known_kinds: Iterable[int]) -> SkillSet:
    media, kinds = set(known_media), set(known_kinds)
    for index, value in enumerate(skills.media_types):
        if value not in media:
            raise _bad(f"skills.media_types[{index}]", f"unknown value {value}", "BAD_SKILLS")
    for index, value in enumerate(skills.object_kinds):
        if value not in kinds:
            raise _bad(f"skills.object_kinds[{index}]", f"unknown value {value}", "BAD_SKILLS")
    for index, language in enumerate(skills.languages):
        if not _LANGUAGE.match(language):
            raise _bad(f"skills.languages[{index}]", "must be a BCP 47 tag such as 'en'", "BAD_SKILLS")
    return SkillSet(
        sorted(set(skills.media_types)),
        sorted(set(skills.object_kinds)),
        sorted({lang.lower() for lang in skills.languages}),
    )


def validate_display_name(name: str, field_name: str = "display_name") -> str:
    if not name.strip():
        raise _bad(field_name, "is required", "DISPLAY_NAME_REQUIRED")
    if len(name) > 200:
        raise _bad(field_name, "must be at most 200 characters", "DISPLAY_NAME_TOO_LONG")
    return name


def gold_accuracy(correct: int, answered: int) -> float:
    """Posterior mean accuracy on gold with the Beta(2, 1) prior."""
    a, b = GOLD_PRIOR
    return (correct + a) / (answered + a + b)


@dataclass(frozen=True)
class Eligibility:
    """What a worker may lease in a project right now."""

    max_tier: int
    media_types: tuple[int, ...] | None
    """None: any media type."""
    gold_only: bool


def check_eligibility(
    *,
    level: int,
    state_suspended: bool,
    skills: SkillSet | None,
    grant_min_level: int,
    schema_object_kinds: Sequence[int],
    language: str,
    qualification_gold_tasks: int,
    min_worker_accuracy: float,
    gold_answered: int,
    gold_correct: int,
) -> Eligibility:
    """Raises PERMISSION_DENIED with the reason a person needs, or says what the worker may get.

    ``skills`` None means an unregistered in-house annotator (no skill restriction).
    """
    if state_suspended:
        raise PermissionDenied("your worker account is suspended", reason="WORKER_SUSPENDED")
    if level < grant_min_level:
        raise PermissionDenied(
            f"this project needs workers of level {grant_min_level} or more; you are level {level}",
            reason="LEVEL_TOO_LOW",
        )
    if skills is not None:
        missing = [k for k in schema_object_kinds if k not in skills.object_kinds]
        if missing:
            raise PermissionDenied(
                f"this project needs the object-kind skills {sorted(set(missing))} that you do not have",
                reason="SKILLS_MISSING",
                metadata={"object_kinds": ",".join(str(k) for k in sorted(set(missing)))},
            )
        if language and language.lower() not in skills.languages:
            raise PermissionDenied(
                f"this project needs the language {language!r} that you do not have", reason="SKILLS_MISSING"
            )
    qualifying = gold_answered < qualification_gold_tasks
    if not qualifying and (qualification_gold_tasks or gold_answered) and min_worker_accuracy > 0:
        accuracy = gold_accuracy(gold_correct, gold_answered)
        if accuracy < min_worker_accuracy:
            raise PermissionDenied(
                f"your accuracy on this project's gold tasks is {accuracy:.2f}; "
                f"the project needs {min_worker_accuracy:.2f}",
                reason="QUALITY_TOO_LOW",
            )
    media = tuple(skills.media_types) if skills is not None else None
    return Eligibility(max_tier=level, media_types=media, gold_only=qualifying)


def tier_for_difficulty(difficulty: float) -> int:
    """Difficulty in [0, 1] → tier 1..5 (0.0-0.2 → 1, ..., 0.8-1.0 → 5)."""
    if math.isnan(difficulty):
        return 1
    return max(1, min(MAX_TIER, 1 + int(max(0.0, min(difficulty, 1.0)) * MAX_TIER - 1e-9)))


# --- pay ------------------------------------------------------------------------------------------


def validate_currency(currency: str, field_name: str = "currency") -> str:
    if not _CURRENCY.match(currency):
        raise _bad(field_name, "must be an ISO 4217 code such as 'USD'", "BAD_CURRENCY")
    return currency


def validate_amount(amount_micros: int, field_name: str, *, positive: bool) -> int:
    low = 1 if positive else 0
    if not low <= amount_micros <= MAX_AMOUNT_MICROS:
        raise _bad(field_name, f"must be between {low} and {MAX_AMOUNT_MICROS} millionths", "BAD_AMOUNT")
    return amount_micros


def validate_reason(reason: str, field_name: str = "reason") -> str:
    if not reason.strip():
        raise _bad(field_name, "is required", "REASON_REQUIRED")
    if len(reason) > MAX_REASON:
        raise _bad(field_name, f"must be at most {MAX_REASON} characters", "REASON_TOO_LONG")
    return reason


@dataclass(frozen=True)
class Rate:
    rate_id: str
    task_kind: int
    tier: int
    amount_micros: int
    currency: str
    effective_time: datetime
    superseded_time: datetime | None


def rate_in_force(rates: Iterable[Rate], *, task_kind: int, tier: int, at: datetime) -> Rate | None:
    """The rate for (kind, tier) that applied at ``at``: the newest one effective at or before it."""
    best: Rate | None = None
    for rate in rates:
        if rate.task_kind != task_kind or rate.tier != tier or rate.effective_time > at:
            continue
        if best is None or rate.effective_time > best.effective_time:
            best = rate
    return best


@dataclass(frozen=True)
class Entry:
    kind: int
    task_id: str
    round: int
    task_kind: int
    tier: int
    amount_micros: int
    rate_id: str
    work_time: datetime


ACCRUAL = 1
BONUS = 2
REVERSAL = 3


def reconcile(entries: Sequence[Entry], rates: Sequence[Rate]) -> list[str]:
    """Problems found re-deriving the ledger from the rates (empty: reconciled).

    Every accrual must be the amount of the rate in force when its work was accepted (0 when no
    rate applied); every reversal must take back exactly one accrual of the same task and round.
    """
    problems: list[str] = []
    accruals: dict[tuple[str, int], Entry] = {}
    for entry in entries:
        if entry.kind == ACCRUAL:
            rate = rate_in_force(rates, task_kind=entry.task_kind, tier=entry.tier, at=entry.work_time)
            expected = rate.amount_micros if rate is not None else 0
            if entry.amount_micros != expected:
                problems.append(
                    f"accrual for task {entry.task_id} round {entry.round} is {entry.amount_micros}, "
                    f"the rate in force says {expected}"
                )
            accruals[(entry.task_id, entry.round)] = entry
    for entry in entries:
        if entry.kind == REVERSAL:
            original = accruals.get((entry.task_id, entry.round))
            if original is None:
                problems.append(f"reversal for task {entry.task_id} round {entry.round} has no accrual")
            elif entry.amount_micros != -original.amount_micros:
                problems.append(f"reversal for task {entry.task_id} round {entry.round} does not match")
    return problems
