"""Events modelassist consumes: projects and schemas (tasks), ingested items (ingestion), accepted
labels (qa) and submitted annotations (annotations, for suggestion survival).

Handlers never call Triton: an ingested item becomes a queue row the worker drains in batches.
"""

from __future__ import annotations

import logging

from annocloud.annotations.v1 import annotations_pb2 as apb
from annocloud.events.v1 import events_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.events import Handler, event_type_of
from annocloud_server.common.paging import parse_name
from annocloud_server.modelassist import assist, store
from annocloud_server.modelassist.models import AssistProject

log = logging.getLogger(__name__)


def _ids(name: str, pattern: str) -> tuple[str, ...] | None:
    try:
        return parse_name(name, pattern)
    except InvalidArgument:
        log.warning("ignoring an event with the resource name %r", name)
        return None


def _boxes(labels: apb.Labels) -> dict[str, list[assist.Box]]:
    found: dict[str, list[assist.Box]] = {}
    for region in labels.regions:
        if region.WhichOneof("geometry") == "box":
            b = region.box
            found.setdefault(region.label, []).append((b.x, b.y, b.width, b.height))
    return found


def on_project_created(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    event = envelope.project_created
    ids = _ids(event.project.name, "projects/{}")
    if ids is None:
        return
    datasets = [d.split("/", 1)[1] for d in event.project.datasets if d.startswith("datasets/")]
    project = store.upsert_project(
        session,
        organization_id=envelope.tenant_id,
        project_id=ids[0],
        settings=event.project.model_assist,
        schema=event.schema if event.HasField("schema") else None,
        datasets=datasets,
    )
    store.backfill(session, project=project, dataset_ids=datasets, now=store.utcnow())


def on_label_schema_published(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    event = envelope.label_schema_published
    ids = _ids(event.project, "projects/{}")
    if ids is None:
        return
    project = session.get(AssistProject, ids[0])
    if project is not None and project.organization_id == envelope.tenant_id:
        store.set_schema(project, event.schema)


def on_project_dataset_added(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    event = envelope.project_dataset_added
    ids = _ids(event.project.name, "projects/{}")
    dataset = _ids(event.dataset, "datasets/{}")
    if ids is None or dataset is None:
        return
    store.upsert_project(
        session,
        organization_id=envelope.tenant_id,
        project_id=ids[0],
        settings=None,
        schema=None,
        datasets=dataset,
    )


def on_item_ingested(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    """Catalogs the item and queues it for every project of its dataset that pre-labels or learns
    actively (a project that arrives later queues it from the catalog)."""
    item = envelope.item_ingested.item
    ids = _ids(item.name, "datasets/{}/items/{}")
    if ids is None or item.near_duplicate_of:
        return
    context = events_pb2.ItemContext(
        item=item.name,
        media_type=item.media_type,
        file_name=item.file_name,
        width=item.width,
        height=item.height,
        text=item.text,
    ).SerializeToString(deterministic=True)
    now = store.utcnow()
    store.catalog(
        session,
        organization_id=envelope.tenant_id,
        dataset_id=ids[0],
        item=item.name,
        context=context,
        blob_key=item.content_sha256,
    )
    for project in store.projects_of_dataset(session, organization_id=envelope.tenant_id, dataset_id=ids[0]):
        if store.wants_work(project):
            store.enqueue(
                session,
                project=project,
                item=item.name,
                context=context,
                blob_key=item.content_sha256,
                now=now,
            )


def on_item_accepted(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    """A single-class accepted label is training data; after ``retrain_every`` new ones the head is due."""
    label = envelope.item_accepted.accepted_label
    ids = _ids(label.name, "projects/{}/acceptedLabels/{}")
    if ids is None:
        return
    project = session.get(AssistProject, ids[0])
    if project is None or project.organization_id != envelope.tenant_id or len(label.labels.classes) != 1:
        return
    if label.labels.classes[0] not in store.classes_of(project):
        return
    if store.record_accepted(session, project=project, item=label.item, label=label.labels.classes[0]):
        project.labels_since_training += 1
    if project.labels_since_training >= store.retrain_every(project) and store.wants_work(project):
        project.rescore_due = 1


def on_annotation_submitted(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    """Compares the submitted labels with each model's suggestion for the item (survival counters,
    overall and for this annotator)."""
    annotation = envelope.annotation_submitted.annotation
    ids = _ids(annotation.name, "projects/{}/annotations/{}")
    if ids is None:
        return
    suggestions = store.suggestions_for(
        session, organization_id=envelope.tenant_id, project_id=ids[0], item=annotation.item
    )
    for suggestion in suggestions:
        suggested = apb.Labels.FromString(suggestion.labels)
        result = assist.survival(
            _boxes(suggested),
            _boxes(annotation.labels),
            suggested_classes=list(suggested.classes),
            submitted_classes=list(annotation.labels.classes) if suggested.classes else [],
        )
        for who in ("", annotation.annotator):
            row = store.stat_row(
                session,
                organization_id=envelope.tenant_id,
                project_id=ids[0],
                model=suggestion.model,
                model_version=suggestion.model_version,
                annotator=who,
            )
            row.annotations += 1
            row.suggested_boxes += result.suggested
            row.unchanged_boxes += result.unchanged
            row.adjusted_boxes += result.adjusted
            row.deleted_boxes += result.deleted
            row.added_boxes += result.added
            row.iou_sum += sum(result.kept_ious)
            row.kept_boxes += len(result.kept_ious)
            row.class_changes += int(result.classes_changed)
            session.flush()


def handlers() -> dict[str, Handler]:
    return {
        event_type_of(events_pb2.ProjectCreated): on_project_created,
        event_type_of(events_pb2.LabelSchemaPublished): on_label_schema_published,
        event_type_of(events_pb2.ProjectDatasetAdded): on_project_dataset_added,
        event_type_of(events_pb2.ItemIngested): on_item_ingested,
        event_type_of(events_pb2.ItemAccepted): on_item_accepted,
        event_type_of(events_pb2.AnnotationSubmitted): on_annotation_submitted,
    }
