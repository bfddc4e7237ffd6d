"""Event handlers: catalog ingested items into tasks, complete tasks on submit, create rework tasks.

Each runs in the consumer's transaction with the inbox row, is scoped by ``envelope.tenant_id`` and
is safe to apply twice (unique task slots, completed tasks stay completed).
"""

from __future__ import annotations

import logging

from annocloud.events.v1 import events_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.events import EventWriter, Handler, event_type_of
from annocloud_server.common.paging import parse_name
from annocloud_server.tasks import store

log = logging.getLogger(__name__)


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
