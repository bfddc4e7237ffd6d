"""Event handlers of the qa service: projects and schemas from tasks, votes (and gold answers) from
annotations."""

from __future__ import annotations

from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.events.v1 import events_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.events import EventWriter, Handler, event_type_of
from annocloud_server.crowd.quality import beta_accuracy
from annocloud_server.qa import scoring, store, workflow
from annocloud_server.qa.models import ACCEPTED, ACTIVE, GOLD, REPLACED, GoldItemRow, VoteRow


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
        quality=event.project.quality.SerializeToString(deterministic=True),
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


def _score_gold(session: Session, events: EventWriter, *, org: str, vote: VoteRow, gold: GoldItemRow) -> None:
    """A gold answer updates the worker's gold counts and emits WorkerScored; it is never a vote."""
    correct = scoring.labels_match(pb.Labels.FromString(vote.labels), pb.Labels.FromString(gold.labels))
    stats = store.worker_stats(
        session,
        organization_id=org,
        project_id=vote.project_id,
        worker=vote.annotator,
        worker_organization=vote.annotator_organization,
    )
    stats.gold_answered += 1
    stats.gold_correct += int(correct)
    project = f"projects/{vote.project_id}"
    events.emit(
        session,
        tenant_id=org,
        resource_name=project,
        aggregate_version=stats.gold_answered,
        payload=events_pb2.WorkerScored(
            project=project,
            worker=vote.annotator,
            worker_organization=vote.annotator_organization,
            task=vote.task,
            annotation=vote.annotation,
            correct=correct,
            gold_answered=stats.gold_answered,
            gold_correct=stats.gold_correct,
            gold_accuracy=beta_accuracy(stats.gold_correct, stats.gold_answered),
        ),
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
        vote = VoteRow(
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
            annotator_organization=event.annotator_organization or org,
            handle_seconds=max(event.handle_seconds, 0.0),
        )
        gold = store.find_gold(session, organization_id=org, project_id=project_id, item=annotation.item)
        if gold is not None:
            vote.state = GOLD
            store.add_vote(session, row=vote)
            _score_gold(session, events, org=org, vote=vote, gold=gold)
            return
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
        store.add_vote(session, row=vote)
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
