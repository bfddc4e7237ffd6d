"""Event handlers: catalog ingested items into tasks, complete tasks on submit, create rework tasks,
and the workforce side of QA: more labels, difficulty tiers, gold items, gold scores and pay.

Each runs in the consumer's transaction with the inbox row, is scoped by ``envelope.tenant_id`` and
is safe to apply twice (unique task slots, completed tasks stay completed, one standing accrual per
task).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from annocloud.events.v1 import events_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.events import EventWriter, Handler, event_type_of
from annocloud_server.common.paging import parse_name
from annocloud_server.tasks import store
from annocloud_server.tasks import workforce_store as wf

log = logging.getLogger(__name__)


def _occurred(envelope: events_pb2.EventEnvelope) -> datetime:
    if envelope.HasField("occurred_time"):
        return envelope.occurred_time.ToDatetime(tzinfo=UTC)
    return store.utcnow()


def _facts(item: events_pb2.ItemContext) -> store.ItemFacts:
    return store.ItemFacts(
        item=item.item,
        media_type=int(item.media_type),
        file_name=item.file_name,
        width=item.width,
        height=item.height,
        text=item.text,
    )


def _ids(name: str, pattern: str, envelope: events_pb2.EventEnvelope) -> tuple[str, ...] | None:
    try:
        return parse_name(name, pattern)
    except InvalidArgument:
        log.warning("ignoring %s %s: bad resource name %r", envelope.event_type, envelope.event_id, name)
        return None


class TaskEventHandlers:
    """The consumed events, bound to the service's event writer."""

    def __init__(self, writer: EventWriter):
        self._writer = writer

    def by_event_type(self) -> dict[str, Handler]:
        return {
            event_type_of(events_pb2.ItemIngested): self.on_item_ingested,
            event_type_of(events_pb2.AnnotationSubmitted): self.on_annotation_submitted,
            event_type_of(events_pb2.ReworkRequested): self.on_rework_requested,
            event_type_of(events_pb2.ItemAccepted): self.on_item_accepted,
            event_type_of(events_pb2.AcceptanceRevoked): self.on_acceptance_revoked,
            event_type_of(events_pb2.MoreLabelsRequested): self.on_more_labels_requested,
            event_type_of(events_pb2.ItemDifficultyAssessed): self.on_item_difficulty_assessed,
            event_type_of(events_pb2.GoldItemAdded): self.on_gold_item_added,
            event_type_of(events_pb2.WorkerScored): self.on_worker_scored,
            event_type_of(events_pb2.ItemsRescored): self.on_items_rescored,
        }

    def on_item_ingested(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        """Catalogs the item and creates its LABEL tasks in the tenant's projects that have its dataset."""
        item = envelope.item_ingested.item
        ids = _ids(item.name, "datasets/{}/items/{}", envelope)
        if ids is None or not envelope.tenant_id:
            return
        store.record_item(
            session,
            self._writer,
            organization_id=envelope.tenant_id,
            dataset_id=ids[0],
            item_id=ids[1],
            media_type=int(item.media_type),
            file_name=item.file_name,
            width=item.width,
            height=item.height,
            text=item.text,
            near_duplicate_of=item.near_duplicate_of,
        )

    def on_annotation_submitted(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        """Completes the annotated task (no-op when already completed)."""
        annotation = envelope.annotation_submitted.annotation
        ids = _ids(annotation.task, "projects/{}/tasks/{}", envelope)
        if ids is None:
            return
        store.complete_task(
            session,
            self._writer,
            organization_id=envelope.tenant_id,
            project_id=ids[0],
            task_id=ids[1],
            annotator=annotation.annotator,
            annotation=annotation.name,
            annotator_org=envelope.annotation_submitted.annotator_organization,
            now=_occurred(envelope),
        )

    def on_rework_requested(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        """Creates the REWORK task for the rejected annotation's annotator (once per annotation)."""
        event = envelope.rework_requested
        ids = _ids(event.task, "projects/{}/tasks/{}", envelope)
        if ids is None or not event.annotator:
            return
        facts = None
        if event.HasField("item") and event.item.item:
            facts = store.ItemFacts(
                item=event.item.item,
                media_type=int(event.item.media_type),
                file_name=event.item.file_name,
                width=event.item.width,
                height=event.item.height,
                text=event.item.text,
            )
        store.create_rework_task(
            session,
            self._writer,
            organization_id=envelope.tenant_id,
            project_id=ids[0],
            task_id=ids[1],
            annotation=event.annotation,
            annotator=event.annotator,
            reason=event.reason,
            facts=facts,
        )

    def on_item_accepted(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        """The item needs no more labels (its waiting LABEL tasks are cancelled); each credited
        task is paid at the rate in force when the item was accepted."""
        event = envelope.item_accepted
        ids = _ids(event.accepted_label.name, "projects/{}/acceptedLabels/{}", envelope)
        if ids is None:
            return
        item = event.accepted_label.item or event.item.item
        store.cancel_open_label_tasks(session, project_id=ids[0], item=item)
        label = event.accepted_label
        accepted_time = (
            label.accept_time.ToDatetime(tzinfo=UTC) if label.HasField("accept_time") else _occurred(envelope)
        )
        for work in event.credited:
            task = wf.task_by_name(session, organization_id=envelope.tenant_id, name=work.task)
            if task is None:
                log.warning("ItemAccepted %s credits unknown task %s", envelope.event_id, work.task)
                continue
            wf.accrue(
                session,
                self._writer,
                task=task,
                vendor_id=work.annotator_organization or task.completed_by_org or envelope.tenant_id,
                worker=work.annotator or task.completed_by,
                accepted_time=accepted_time,
                now=store.utcnow(),
            )

    def on_acceptance_revoked(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        """An audit rejected accepted work: its pay is reversed."""
        event = envelope.acceptance_revoked
        reason = f"{event.reason_code}: {event.reason}" if event.reason_code else event.reason
        for work in event.revoked:
            task = wf.task_by_name(session, organization_id=envelope.tenant_id, name=work.task)
            if task is None:
                continue
            wf.reverse(
                session,
                self._writer,
                task=task,
                reason=reason or "rejected in audit",
                rejected_time=_occurred(envelope),
                now=store.utcnow(),
            )

    def on_more_labels_requested(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        """Dynamic overlap: LABEL tasks until the item has the labels wanted (at most max_labels)."""
        event = envelope.more_labels_requested
        ids = _ids(event.project, "projects/{}", envelope)
        if ids is None or not event.item.item:
            return
        project = store.find_project(session, organization_id=envelope.tenant_id, project_id=ids[0])
        if project is None:
            return
        store.add_label_tasks(
            session,
            self._writer,
            project=project,
            facts=_facts(event.item),
            labels_wanted=event.labels_wanted,
        )

    def on_item_difficulty_assessed(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        """The item's waiting tasks move up to the tier of its difficulty."""
        event = envelope.item_difficulty_assessed
        ids = _ids(event.project, "projects/{}", envelope)
        if ids is None or not event.item:
            return
        if store.find_project(session, organization_id=envelope.tenant_id, project_id=ids[0]) is None:
            return
        store.set_item_difficulty(
            session,
            organization_id=envelope.tenant_id,
            project_id=ids[0],
            item=event.item,
            difficulty=event.difficulty,
            source=event.source,
        )

    def on_gold_item_added(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        """The item is served as gold from now on; its ordinary waiting tasks are cancelled."""
        event = envelope.gold_item_added
        ids = _ids(event.project, "projects/{}", envelope)
        if ids is None or not event.item:
            return
        store.add_gold_item(session, organization_id=envelope.tenant_id, project_id=ids[0], item=event.item)

    def on_worker_scored(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        """Gold counts for routing and qualification; a correct gold answer is paid like accepted work
        (gold must look like any other task, pay included)."""
        event = envelope.worker_scored
        ids = _ids(event.project, "projects/{}", envelope)
        if ids is None or not event.worker:
            return
        wf.record_gold_score(
            session,
            organization_id=envelope.tenant_id,
            project_id=ids[0],
            worker=event.worker,
            worker_org=event.worker_organization or envelope.tenant_id,
            answered=event.gold_answered,
            correct=event.gold_correct,
        )
        if not event.correct:
            return
        task = wf.task_by_name(session, organization_id=envelope.tenant_id, name=event.task)
        if task is not None:
            wf.accrue(
                session,
                self._writer,
                task=task,
                vendor_id=event.worker_organization or envelope.tenant_id,
                worker=event.worker,
                accepted_time=_occurred(envelope),
                now=store.utcnow(),
            )

    def on_items_rescored(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        """Active learning reorders the queue: priorities by rank. Once a head exists the rank also
        feeds difficulty: the most uncertain half climbs to at most tier 3, so low-level workers
        keep a queue while the hardest items go to stronger ones."""
        event = envelope.items_rescored
        ids = _ids(event.project, "projects/{}", envelope)
        if (
            ids is None
            or store.find_project(session, organization_id=envelope.tenant_id, project_id=ids[0]) is None
        ):
            return
        store.apply_scores(session, project_id=ids[0], scores=[(s.item, s.priority) for s in event.scores])
        if event.head_version <= 0:
            return
        for score in event.scores:
            rank_share = (score.priority - 1) / 98
            difficulty = 0.6 * max(0.0, 2 * rank_share - 1)
            if difficulty <= 0:
                continue
            store.set_item_difficulty(
                session,
                organization_id=envelope.tenant_id,
                project_id=ids[0],
                item=score.item,
                difficulty=difficulty,
                source=f"model:{event.strategy}/head-{event.head_version}",
            )
