"""Event handlers of the qa service: projects and schemas from tasks, votes from annotations."""

from __future__ import annotations

from annocloud.events.v1 import events_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.events import EventWriter, Handler, event_type_of
from annocloud_server.qa import store, workflow
from annocloud_server.qa.models import ACCEPTED, ACTIVE, REPLACED, VoteRow


def _project_id(name: str) -> str:
    """`projects/{p}` or `projects/{p}/...` -> p."""
    parts = name.split("/")
    return parts[1] if len(parts) >= 2 and parts[0] == "projects" else ""


def on_project_created(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    event = envelope.project_created
    project_id = _project_id(event.project.name)
    store.upsert_project(
        session,
        organization_id=envelope.tenant_id,
        project_id=project_id,
        redundancy=event.project.redundancy,
        review_policy=event.project.review_policy,
        min_agreement=event.project.min_agreement,
    )
    if event.HasField("schema"):
        store.put_schema(
            session,
            organization_id=envelope.tenant_id,
            project_id=project_id,
            version=event.schema.version,
            schema=event.schema.SerializeToString(deterministic=True),
        )


def on_label_schema_published(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    event = envelope.label_schema_published
    store.put_schema(
        session,
        organization_id=envelope.tenant_id,
        project_id=_project_id(event.project or event.schema.name),
        version=event.schema.version,
        schema=event.schema.SerializeToString(deterministic=True),
    )


def make_on_annotation_submitted(events: EventWriter) -> Handler:
    def on_annotation_submitted(session: Session, envelope: events_pb2.EventEnvelope) -> None:
        event = envelope.annotation_submitted
        annotation = event.annotation
        org = envelope.tenant_id
        if store.find_vote(session, organization_id=org, annotation=annotation.name) is not None:
            return
        project_id = _project_id(annotation.name)
        project = store.ensure_project(
            session, organization_id=org, project_id=project_id, redundancy=event.redundancy
        )
        item = store.ensure_item(
            session,
            organization_id=org,
            project_id=project_id,
            item=annotation.item,
            redundancy=event.redundancy or project.redundancy,
            context=event.item.SerializeToString(deterministic=True),
        )
        if event.rework_of:
            replaced = store.find_vote(session, organization_id=org, annotation=event.rework_of)
            if replaced is not None and replaced.item == annotation.item:
                replaced.state = REPLACED
        store.add_vote(
            session,
            row=VoteRow(
                organization_id=org,
                project_id=project_id,
                item=annotation.item,
                annotation=annotation.name,
                task=annotation.task,
                annotator=annotation.annotator,
                labels=annotation.labels.SerializeToString(deterministic=True),
                revision=annotation.revision,
                schema_version=annotation.schema_version,
                state=ACTIVE,
            ),
        )
        workflow.settle(session, events, project=project, item=item)

    return on_annotation_submitted


def on_annotation_revised(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    annotation = envelope.annotation_revised.annotation
    org = envelope.tenant_id
    vote = store.find_vote(session, organization_id=org, annotation=annotation.name)
    if vote is None or vote.state != ACTIVE or annotation.revision <= vote.revision:
        return
    item = store.get_item(session, organization_id=org, project_id=vote.project_id, item=vote.item)
    if item is None or item.status == ACCEPTED:
        return
    vote.labels = annotation.labels.SerializeToString(deterministic=True)
    vote.revision = annotation.revision


def make_handlers(events: EventWriter) -> dict[str, Handler]:
    return {
        event_type_of(events_pb2.ProjectCreated): on_project_created,
        event_type_of(events_pb2.LabelSchemaPublished): on_label_schema_published,
        event_type_of(events_pb2.AnnotationSubmitted): make_on_annotation_submitted(events),
        event_type_of(events_pb2.AnnotationRevised): on_annotation_revised,
    }
