"""Event handlers: projects and schema versions from tasks, accepted labels from qa."""

from __future__ import annotations

from datetime import UTC, datetime

from annocloud.events.v1 import events_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.paging import parse_name
from annocloud_server.export import store


def _time_or_none(seconds: int, nanos: int) -> datetime | None:
    if seconds == 0 and nanos == 0:
        return None
    return datetime.fromtimestamp(seconds + nanos / 1e9, UTC)


def on_project_created(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    """Remembers the project (exports need it) and its first schema."""
    event = envelope.project_created
    (project_id,) = parse_name(event.project.name, "projects/{}")
    created = _time_or_none(event.project.create_time.seconds, event.project.create_time.nanos)
    store.upsert_project(
        session,
        organization_id=envelope.tenant_id,
        project_id=project_id,
        display_name=event.project.display_name,
        create_time=created or datetime.now(UTC),
    )
    if event.HasField("schema") and event.schema.version > 0:
        store.put_schema(
            session,
            organization_id=envelope.tenant_id,
            project_id=project_id,
            version=event.schema.version,
            schema=event.schema.SerializeToString(deterministic=True),
        )


def on_label_schema_published(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    """Stores a schema version; the newest one gives exports their categories."""
    event = envelope.label_schema_published
    (project_id,) = parse_name(event.project, "projects/{}")
    if event.schema.version > 0:
        store.put_schema(
            session,
            organization_id=envelope.tenant_id,
            project_id=project_id,
            version=event.schema.version,
            schema=event.schema.SerializeToString(deterministic=True),
        )


def on_item_accepted(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    """Upserts the accepted label of (organization, project, item); a later acceptance replaces it."""
    event = envelope.item_accepted
    label = event.accepted_label
    project_id, _ = parse_name(label.name, "projects/{}/acceptedLabels/{}")
    item = label.item or event.item.item
    store.upsert_accepted(
        session,
        organization_id=envelope.tenant_id,
        project_id=project_id,
        item=item or label.name,
        accept_time=_time_or_none(label.accept_time.seconds, label.accept_time.nanos),
        accepted_label=label.SerializeToString(deterministic=True),
        item_context=event.item.SerializeToString(deterministic=True),
    )
