"""Translations between stored rows, domain values and the ``annocloud.tasks.v1`` messages."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from annocloud.tasks.v1 import tasks_pb2
from annocloud.tasks.v1 import workforce_pb2 as wpb

from annocloud_server.tasks import models, workforce
from annocloud_server.tasks.domain import (
    AttributeSpec,
    ClassSpec,
    ObjectSpec,
    SchemaSpec,
    TaskState,
    effective_state,
)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; every stored time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def project_name(project_id: str) -> str:
    return f"projects/{project_id}"


def task_name(project_id: str, task_id: str) -> str:
    return f"projects/{project_id}/tasks/{task_id}"


def schema_name(project_id: str, version: int) -> str:
    return f"projects/{project_id}/schemas/{version}"


def _attributes_from_proto(attributes: Any) -> list[AttributeSpec]:
    return [AttributeSpec(a.name, int(a.type), list(a.values), a.required) for a in attributes]


def schema_from_proto(schema: tasks_pb2.LabelSchema) -> SchemaSpec:
    return SchemaSpec(
        classification_mode=int(schema.classification_mode),
        classes=[ClassSpec(c.name, _attributes_from_proto(c.attributes)) for c in schema.classes],
        allow_not_sure=schema.allow_not_sure,
        objects=[
            ObjectSpec(o.name, int(o.kind), list(o.keypoint_names), _attributes_from_proto(o.attributes))
            for o in schema.objects
        ],
        instructions=schema.instructions,
    )


def schema_to_json(spec: SchemaSpec) -> str:
    return json.dumps(asdict(spec), separators=(",", ":"))


def _attributes_from_json(items: list[dict[str, Any]]) -> list[AttributeSpec]:
    return [AttributeSpec(**item) for item in items]


def schema_from_json(body: str) -> SchemaSpec:
    data = json.loads(body)
    return SchemaSpec(
        classification_mode=data["classification_mode"],
        classes=[ClassSpec(c["name"], _attributes_from_json(c["attributes"])) for c in data["classes"]],
        allow_not_sure=data["allow_not_sure"],
        objects=[
            ObjectSpec(
                o["name"], o["kind"], list(o["keypoint_names"]), _attributes_from_json(o["attributes"])
            )
            for o in data["objects"]
        ],
        instructions=data["instructions"],
    )


def _attributes_to_proto(attributes: list[AttributeSpec]) -> list[tasks_pb2.AttributeDefinition]:
    return [
        tasks_pb2.AttributeDefinition(
            name=a.name,
            type=a.type,  # type: ignore[arg-type]
            values=a.values,
            required=a.required,
        )
        for a in attributes
    ]


def schema_to_proto(row: models.LabelSchema) -> tasks_pb2.LabelSchema:
    spec = schema_from_json(row.body)
    message = tasks_pb2.LabelSchema(
        name=schema_name(row.project_id, row.version),
        version=row.version,
        classification_mode=spec.classification_mode,  # type: ignore[arg-type]
        classes=[
            tasks_pb2.ClassLabel(name=c.name, attributes=_attributes_to_proto(c.attributes))
            for c in spec.classes
        ],
        allow_not_sure=spec.allow_not_sure,
        objects=[
            tasks_pb2.ObjectLabel(
                name=o.name,
                kind=o.kind,  # type: ignore[arg-type]
                keypoint_names=o.keypoint_names,
                attributes=_attributes_to_proto(o.attributes),
            )
            for o in spec.objects
        ],
        instructions=spec.instructions,
    )
    message.create_time.FromDatetime(as_utc(row.create_time))
    return message


def project_to_proto(
    row: models.Project, dataset_ids: list[str], counts: tuple[int, int, int] = (0, 0, 0)
) -> tasks_pb2.Project:
    message = tasks_pb2.Project(
        name=project_name(row.project_id),
        display_name=row.display_name,
        redundancy=row.redundancy,
        datasets=[f"datasets/{d}" for d in dataset_ids],
        schema_version=row.schema_version,
        review_policy=row.review_policy,  # type: ignore[arg-type]
        min_agreement=row.min_agreement,
        task_counts=tasks_pb2.TaskCounts(queued=counts[0], leased=counts[1], completed=counts[2]),
        quality=tasks_pb2.QualitySettings.FromString(row.quality or b""),
        organization=row.organization_id,
        model_assist=tasks_pb2.ModelAssistSettings.FromString(row.model_assist or b""),
    )
    message.create_time.FromDatetime(as_utc(row.create_time))
    return message


def task_to_proto(row: models.Task, now: datetime | None = None) -> tasks_pb2.Task:
    """The task as clients see it: a lease that ran out shows as QUEUED without a lease."""
    now = now or datetime.now(UTC)
    expire = as_utc(row.lease_expire_time) if row.lease_expire_time is not None else None
    state = effective_state(row.state, expire, now)
    message = tasks_pb2.Task(
        name=task_name(row.project_id, row.task_id),
        item=row.item,
        schema_version=row.schema_version,
        state=int(state),  # type: ignore[arg-type]
        priority=row.priority,
        kind=row.kind,  # type: ignore[arg-type]
        assigned_worker=row.assigned_worker,
        media_type=row.media_type,  # type: ignore[arg-type]
        item_file_name=row.item_file_name,
        item_width=row.item_width,
        item_height=row.item_height,
        item_text=row.item_text,
        redundancy=row.redundancy,
        rework_of=row.rework_of,
        rework_reason=row.rework_reason,
        completed_by=row.completed_by,
        difficulty_tier=row.difficulty_tier or 1,
        completed_by_organization=row.completed_by_org or "",
    )
    if state == TaskState.LEASED and expire is not None:
        message.lease.lease_id = row.lease_id or ""
        message.lease.worker = row.lease_worker or ""
        message.lease.worker_organization = row.lease_worker_org or ""
        message.lease.expire_time.FromDatetime(expire)
        if row.lease_time is not None:
            message.lease.lease_time.FromDatetime(as_utc(row.lease_time))
    message.create_time.FromDatetime(as_utc(row.create_time))
    return message


# --- quality settings and the workforce -----------------------------------------------------------


def quality_from_proto(message: tasks_pb2.QualitySettings) -> workforce.QualitySpec:
    overlap = None
    if message.HasField("dynamic_overlap"):
        o = message.dynamic_overlap
        overlap = workforce.Overlap(o.min_labels, o.max_labels, o.confidence_threshold)
    return workforce.QualitySpec(
        review_stages=[int(s) for s in message.review_stages],
        audit_rate=message.audit_rate,
        error_taxonomy=[(e.code, e.description) for e in message.error_taxonomy],
        overlap=overlap,
        gold_rate=message.gold_rate,
        qualification_gold_tasks=message.qualification_gold_tasks,
        min_worker_accuracy=message.min_worker_accuracy,
        aggregation=int(message.aggregation),
        language=message.language,
    )


def quality_to_proto(spec: workforce.QualitySpec) -> tasks_pb2.QualitySettings:
    message = tasks_pb2.QualitySettings(
        review_stages=spec.review_stages,  # type: ignore[arg-type]
        audit_rate=spec.audit_rate,
        error_taxonomy=[tasks_pb2.ErrorCode(code=c, description=d) for c, d in spec.error_taxonomy],
        gold_rate=spec.gold_rate,
        qualification_gold_tasks=spec.qualification_gold_tasks,
        min_worker_accuracy=spec.min_worker_accuracy,
        aggregation=spec.aggregation or tasks_pb2.AGGREGATION_METHOD_WEIGHTED,  # type: ignore[arg-type]
        language=spec.language,
    )
    if spec.overlap is not None:
        message.dynamic_overlap.CopyFrom(
            tasks_pb2.DynamicOverlap(
                min_labels=spec.overlap.min_labels,
                max_labels=spec.overlap.max_labels,
                confidence_threshold=spec.overlap.confidence_threshold,
            )
        )
    return message


def skills_of(row: models.Worker) -> workforce.SkillSet:
    skills = wpb.Skills.FromString(row.skills)
    return workforce.SkillSet(
        [int(m) for m in skills.media_types], [int(k) for k in skills.object_kinds], list(skills.languages)
    )


def vendor_to_proto(row: models.Vendor) -> wpb.Vendor:
    message = wpb.Vendor(name=f"vendors/{row.organization_id}", display_name=row.display_name)
    message.create_time.FromDatetime(as_utc(row.create_time))
    return message


def worker_to_proto(row: models.Worker, gold_answered: int, gold_correct: int) -> wpb.Worker:
    message = wpb.Worker(
        name=f"vendors/{row.organization_id}/workers/{row.worker_id}",
        subject=row.subject,
        display_name=row.display_name,
        skills=wpb.Skills.FromString(row.skills),
        level=row.level,
        state=row.state,  # type: ignore[arg-type]
        gold_answered=gold_answered,
        gold_correct=gold_correct,
        gold_accuracy=workforce.gold_accuracy(gold_correct, gold_answered),
    )
    message.create_time.FromDatetime(as_utc(row.create_time))
    return message


def grant_to_proto(row: models.Grant) -> wpb.Grant:
    message = wpb.Grant(
        name=f"projects/{row.project_id}/grants/{row.vendor_id}",
        vendor=f"vendors/{row.vendor_id}",
        min_level=row.min_level,
        granted_by=row.granted_by,
    )
    message.create_time.FromDatetime(as_utc(row.create_time))
    return message


def rate_of(row: models.PayRate) -> workforce.Rate:
    return workforce.Rate(
        rate_id=row.rate_id,
        task_kind=row.task_kind,
        tier=row.difficulty_tier,
        amount_micros=row.amount_micros,
        currency=row.currency,
        effective_time=as_utc(row.effective_time),
        superseded_time=as_utc(row.superseded_time) if row.superseded_time is not None else None,
    )


def pay_rate_to_proto(row: models.PayRate) -> wpb.PayRate:
    message = wpb.PayRate(
        name=f"projects/{row.project_id}/payRates/{row.rate_id}",
        task_kind=row.task_kind,  # type: ignore[arg-type]
        difficulty_tier=row.difficulty_tier,
        amount_micros=row.amount_micros,
        currency=row.currency,
    )
    message.effective_time.FromDatetime(as_utc(row.effective_time))
    if row.superseded_time is not None:
        message.superseded_time.FromDatetime(as_utc(row.superseded_time))
    return message


def entry_of(row: models.LedgerEntry) -> workforce.Entry:
    return workforce.Entry(
        kind=row.kind,
        task_id=row.task_id,
        round=row.round,
        task_kind=row.task_kind,
        tier=row.difficulty_tier,
        amount_micros=row.amount_micros,
        rate_id=row.rate_id,
        work_time=as_utc(row.work_time),
    )


def ledger_entry_to_proto(row: models.LedgerEntry) -> wpb.LedgerEntry:
    message = wpb.LedgerEntry(
        name=f"projects/{row.project_id}/ledgerEntries/{row.entry_id}",
        kind=row.kind,  # type: ignore[arg-type]
        vendor=f"vendors/{row.vendor_id}",
        worker=row.worker,
        task=task_name(row.project_id, row.task_id) if row.task_id else "",
        amount_micros=row.amount_micros,
        currency=row.currency,
        pay_rate=f"projects/{row.project_id}/payRates/{row.rate_id}" if row.rate_id else "",
        reason=row.reason,
    )
    message.create_time.FromDatetime(as_utc(row.create_time))
    return message
