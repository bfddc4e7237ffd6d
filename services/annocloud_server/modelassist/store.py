"""Repository functions of modelassist; each runs inside the caller's transaction and is scoped by
organization."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from annocloud.tasks.v1 import tasks_pb2
from numpy.typing import NDArray
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from annocloud_server.common.errors import NotFound
from annocloud_server.modelassist import heads
from annocloud_server.modelassist.models import (
    AcceptedClass,
    AssistDataset,
    AssistProject,
    CatalogItem,
    Embedding,
    PendingItem,
    Suggestion,
    SuggestionStat,
)

DEFAULT_RETRAIN_EVERY = 20


def utcnow() -> datetime:
    return datetime.now(UTC)


def settings_of(project: AssistProject) -> tasks_pb2.ModelAssistSettings:
    return tasks_pb2.ModelAssistSettings.FromString(project.settings or b"")


def retrain_every(project: AssistProject) -> int:
    return settings_of(project).retrain_every or DEFAULT_RETRAIN_EVERY


def wants_work(project: AssistProject) -> bool:
    """Pre-labels or active learning are on, so ingested items are worth a Triton call."""
    settings = settings_of(project)
    active = settings.strategy not in (
        tasks_pb2.SAMPLING_STRATEGY_UNSPECIFIED,
        tasks_pb2.SAMPLING_STRATEGY_NONE,
    )
    return bool(settings.prelabel) or active


def classes_of(project: AssistProject) -> list[str]:
    return [str(c) for c in json.loads(project.classes or "[]")]


def upsert_project(
    session: Session,
    *,
    organization_id: str,
    project_id: str,
    settings: tasks_pb2.ModelAssistSettings | None,
    schema: tasks_pb2.LabelSchema | None,
    datasets: Sequence[str],
) -> AssistProject:
    row = session.get(AssistProject, project_id)
    if row is None:
        row = AssistProject(
            project_id=project_id,
            organization_id=organization_id,
            settings=b"",
            classes="[]",
            box_labels="[]",
            head_version=0,
            head=b"",
            trained_on=0,
            labels_since_training=0,
            scored_items=0,
            train_time=None,
            rescore_due=0,
        )
        session.add(row)
    elif row.organization_id != organization_id:
        return row
    if settings is not None:
        row.settings = settings.SerializeToString(deterministic=True)
    if schema is not None:
        set_schema(row, schema)
    for dataset_id in datasets:
        if session.get(AssistDataset, (project_id, dataset_id)) is None:
            session.add(
                AssistDataset(project_id=project_id, dataset_id=dataset_id, organization_id=organization_id)
            )
    session.flush()
    return row


def set_schema(row: AssistProject, schema: tasks_pb2.LabelSchema) -> None:
    row.classes = json.dumps([c.name for c in schema.classes])
    row.box_labels = json.dumps([o.name for o in schema.objects if o.kind == tasks_pb2.OBJECT_KIND_BOX])


def get_project(session: Session, *, organization_id: str, project_id: str) -> AssistProject:
    row = session.get(AssistProject, project_id)
    if row is None or row.organization_id != organization_id:
        raise NotFound(f"project projects/{project_id} not found", reason="PROJECT_NOT_FOUND")
    return row


def projects_of_dataset(session: Session, *, organization_id: str, dataset_id: str) -> list[AssistProject]:
    return list(
        session.execute(
            select(AssistProject)
            .join(AssistDataset, AssistDataset.project_id == AssistProject.project_id)
            .where(AssistDataset.organization_id == organization_id, AssistDataset.dataset_id == dataset_id)
            .order_by(AssistProject.project_id)
        ).scalars()
    )


def enqueue(
    session: Session, *, project: AssistProject, item: str, context: bytes, blob_key: str, now: datetime
) -> None:
    exists = session.execute(
        select(PendingItem.seq).where(PendingItem.project_id == project.project_id, PendingItem.item == item)
    ).first()
    if exists is None and session.get(Embedding, (project.project_id, item)) is None:
        session.add(
            PendingItem(
                organization_id=project.organization_id,
                project_id=project.project_id,
                item=item,
                context=context,
                blob_key=blob_key,
                attempts=0,
                next_attempt_time=now,
                last_error="",
            )
        )


def catalog(
    session: Session, *, organization_id: str, dataset_id: str, item: str, context: bytes, blob_key: str
) -> None:
    row = session.get(CatalogItem, item)
    if row is None:
        seq = session.execute(select(func.count()).select_from(CatalogItem)).scalar_one()
        session.add(
            CatalogItem(
                item=item,
                organization_id=organization_id,
                dataset_id=dataset_id,
                context=context,
                blob_key=blob_key,
                seq=int(seq) + 1,
            )
        )
    elif row.organization_id == organization_id:
        row.context, row.blob_key = context, blob_key


def backfill(session: Session, *, project: AssistProject, dataset_ids: Sequence[str], now: datetime) -> int:
    """Queues the already ingested items of ``dataset_ids`` for the project; how many."""
    if not wants_work(project):
        return 0
    count = 0
    for dataset_id in dataset_ids:
        rows = session.execute(
            select(CatalogItem)
            .where(
                CatalogItem.organization_id == project.organization_id, CatalogItem.dataset_id == dataset_id
            )
            .order_by(CatalogItem.seq)
        ).scalars()
        for row in rows:
            enqueue(
                session, project=project, item=row.item, context=row.context, blob_key=row.blob_key, now=now
            )
            count += 1
    return count


def due_items(session: Session, *, now: datetime, limit: int) -> list[PendingItem]:
    return list(
        session.execute(
            select(PendingItem)
            .where(PendingItem.next_attempt_time <= now)
            .order_by(PendingItem.next_attempt_time, PendingItem.seq)
            .limit(limit)
        ).scalars()
    )


def store_embedding(
    session: Session, *, project: AssistProject, item: str, model: str, vector: NDArray[np.float32]
) -> None:
    row = session.get(Embedding, (project.project_id, item))
    data = np.asarray(vector, dtype=np.float32).tobytes()
    if row is None:
        seq = session.execute(
            select(func.count()).select_from(Embedding).where(Embedding.project_id == project.project_id)
        ).scalar_one()
        session.add(
            Embedding(
                project_id=project.project_id,
                item=item,
                organization_id=project.organization_id,
                model=model,
                vector=data,
                seq=int(seq) + 1,
            )
        )
    else:
        row.model, row.vector = model, data


def embeddings(session: Session, *, project_id: str) -> tuple[list[str], NDArray[np.float64]]:
    rows = list(
        session.execute(
            select(Embedding).where(Embedding.project_id == project_id).order_by(Embedding.seq)
        ).scalars()
    )
    if not rows:
        return [], np.zeros((0, 0))
    return [r.item for r in rows], np.stack([np.frombuffer(r.vector, dtype=np.float32) for r in rows]).astype(
        np.float64
    )


def embedded_count(session: Session, *, project_id: str) -> int:
    return int(
        session.execute(
            select(func.count()).select_from(Embedding).where(Embedding.project_id == project_id)
        ).scalar_one()
    )


def accepted_classes(session: Session, *, project_id: str) -> dict[str, str]:
    rows = session.execute(
        select(AcceptedClass.item, AcceptedClass.label).where(AcceptedClass.project_id == project_id)
    ).all()
    return {str(item): str(label) for item, label in rows}


def record_accepted(session: Session, *, project: AssistProject, item: str, label: str) -> bool:
    """Stores the item's accepted class; True when it is new for the item."""
    row = session.get(AcceptedClass, (project.project_id, item))
    if row is None:
        session.add(
            AcceptedClass(
                project_id=project.project_id, item=item, organization_id=project.organization_id, label=label
            )
        )
        return True
    row.label = label
    return False


def save_head(
    project: AssistProject, head: heads.SoftmaxHead, committee: Sequence[heads.SoftmaxHead]
) -> None:
    buffer = io.BytesIO()
    arrays: dict[str, NDArray[np.float64]] = {"weights": head.weights, "bias": head.bias}
    for i, member in enumerate(committee):
        arrays[f"c{i}_weights"], arrays[f"c{i}_bias"] = member.weights, member.bias
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    project.head = buffer.getvalue()


def load_head(project: AssistProject) -> tuple[heads.SoftmaxHead | None, list[heads.SoftmaxHead]]:
    if not project.head:
        return None, []
    with np.load(io.BytesIO(project.head)) as data:
        head = heads.SoftmaxHead(weights=data["weights"], bias=data["bias"])
        committee = []
        i = 0
        while f"c{i}_weights" in data:
            committee.append(heads.SoftmaxHead(weights=data[f"c{i}_weights"], bias=data[f"c{i}_bias"]))
            i += 1
    return head, committee


def put_suggestion(
    session: Session, *, project: AssistProject, item: str, model: str, model_version: str, labels: bytes
) -> None:
    row = session.get(Suggestion, (project.project_id, item, model))
    if row is None:
        session.add(
            Suggestion(
                project_id=project.project_id,
                item=item,
                model=model,
                organization_id=project.organization_id,
                model_version=model_version,
                labels=labels,
            )
        )
    else:
        row.model_version, row.labels = model_version, labels


def suggestions_for(
    session: Session, *, organization_id: str, project_id: str, item: str
) -> list[Suggestion]:
    return list(
        session.execute(
            select(Suggestion).where(
                Suggestion.organization_id == organization_id,
                Suggestion.project_id == project_id,
                Suggestion.item == item,
            )
        ).scalars()
    )


def stat_row(
    session: Session, *, organization_id: str, project_id: str, model: str, model_version: str, annotator: str
) -> SuggestionStat:
    row = session.get(SuggestionStat, (project_id, model, model_version, annotator))
    if row is None:
        row = SuggestionStat(
            project_id=project_id,
            model=model,
            model_version=model_version,
            annotator=annotator,
            organization_id=organization_id,
            annotations=0,
            suggested_boxes=0,
            unchanged_boxes=0,
            adjusted_boxes=0,
            deleted_boxes=0,
            added_boxes=0,
            iou_sum=0.0,
            kept_boxes=0,
            class_changes=0,
        )
        session.add(row)
    return row


def list_stats(session: Session, *, organization_id: str, project_id: str) -> list[SuggestionStat]:
    return list(
        session.execute(
            select(SuggestionStat)
            .where(SuggestionStat.organization_id == organization_id, SuggestionStat.project_id == project_id)
            .order_by(SuggestionStat.model, SuggestionStat.model_version, SuggestionStat.annotator)
        ).scalars()
    )


def claim(session: Session, *, seq: int) -> bool:
    """Deletes a queue row; False when it is already gone (another worker finished it)."""
    result = session.execute(delete(PendingItem).where(PendingItem.seq == seq))
    return bool(getattr(result, "rowcount", 0))


def back_off(session: Session, *, seq: int, error: str, now: datetime, max_backoff: timedelta) -> None:
    row = session.get(PendingItem, seq)
    if row is None:
        return
    row.attempts += 1
    row.last_error = error[:2000]
    row.next_attempt_time = now + min(max_backoff, timedelta(seconds=2 ** min(row.attempts, 9)))
