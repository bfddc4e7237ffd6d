"""qa event handlers and store on a SQLite file, without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
from annocloud.annotations.v1 import annotations_pb2 as apb
from annocloud.events.v1 import events_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.events import TOPIC_QA, EventWriter, event_type_of
from annocloud_server.qa import store
from annocloud_server.qa.handlers import make_handlers
from annocloud_server.qa.models import ACCEPTED, Base, VoteRow, outbox
from sqlalchemy import select


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(sqlite_url(str(tmp_path / "qa.db")))
    database.create_tables(Base.metadata)
    return database


def apply(db: Database, envelope: events_pb2.EventEnvelope) -> None:
    handlers = make_handlers(EventWriter(outbox, TOPIC_QA))
    with db.transaction() as session:
        handlers[envelope.event_type](session, envelope)


def submitted(org: str, n: int, cls: str, revision: int = 1) -> events_pb2.EventEnvelope:
    annotation = apb.Annotation(
        name=f"projects/p1/annotations/a{n}",
        task=f"projects/p1/tasks/t{n}",
        item="datasets/d1/items/i1",
        schema_version=1,
        annotator=f"user:w{n}",
        labels=apb.Labels(classes=[cls]),
        revision=revision,
    )
    envelope = events_pb2.EventEnvelope(event_id=f"e{n}", tenant_id=org, resource_name=annotation.name)
    envelope.annotation_submitted.annotation.CopyFrom(annotation)
    envelope.annotation_submitted.redundancy = 2
    envelope.event_type = event_type_of(events_pb2.AnnotationSubmitted)
    return envelope


def revised(org: str, n: int, cls: str, revision: int) -> events_pb2.EventEnvelope:
    envelope = submitted(org, n, cls, revision)
    annotation = envelope.annotation_submitted.annotation
    envelope.ClearField("annotation_submitted")
    envelope.annotation_revised.annotation.CopyFrom(annotation)
    envelope.event_type = event_type_of(events_pb2.AnnotationRevised)
    return envelope


def outbox_types(db: Database) -> list[str]:
    with db.transaction() as session:
        values = session.execute(select(outbox.c.value)).scalars().all()
    return [events_pb2.EventEnvelope.FromString(v).event_type for v in values]


def test_revision_before_decision_changes_the_vote(db: Database) -> None:
    """A revision that arrives before aggregation replaces the vote's labels, so the item is accepted."""
    apply(db, submitted("acme", 1, "dog"))
    apply(db, revised("acme", 1, "cat", revision=2))
    apply(db, revised("acme", 1, "dog", revision=2))  # a replay of an older revision changes nothing
    apply(db, submitted("acme", 2, "cat"))
    assert outbox_types(db) == [event_type_of(events_pb2.ItemAccepted)]
    with db.transaction() as session:
        item = store.get_item(session, organization_id="acme", project_id="p1", item="datasets/d1/items/i1")
        assert item is not None
        assert item.status == ACCEPTED
        accepted = store.get_accepted(session, organization_id="acme", project_id="p1", item_id="i1")
        assert apb.Labels.FromString(accepted.labels).classes == ["cat"]


def test_votes_are_per_organization(db: Database) -> None:
    """Votes of two organizations on the same item names never mix."""
    apply(db, submitted("acme", 1, "cat"))
    other = submitted("evil", 1, "cat")
    other.event_id = "other"
    apply(db, other)
    assert outbox_types(db) == []
    with db.transaction() as session:
        rows = session.scalars(select(VoteRow)).all()
        assert sorted(r.organization_id for r in rows) == ["acme", "evil"]


def test_project_created_stores_settings_and_schema(db: Database) -> None:
    """ProjectCreated stores redundancy, policy, minimum agreement and the schema version."""
    envelope = events_pb2.EventEnvelope(
        event_id="p", tenant_id="acme", event_type=event_type_of(events_pb2.ProjectCreated)
    )
    envelope.project_created.project.CopyFrom(
        tasks_pb2.Project(
            name="projects/p1", redundancy=4, review_policy=tasks_pb2.REVIEW_POLICY_ALL, min_agreement=0.8
        )
    )
    envelope.project_created.schema.CopyFrom(tasks_pb2.LabelSchema(version=1, allow_not_sure=True))
    apply(db, envelope)
    apply(db, envelope)
    with db.transaction() as session:
        project = store.get_project(session, organization_id="acme", project_id="p1")
        assert (project.redundancy, project.review_policy, project.min_agreement) == (
            4,
            tasks_pb2.REVIEW_POLICY_ALL,
            0.8,
        )
        assert store.get_schema(session, organization_id="acme", project_id="p1", version=1) is not None
        assert store.get_schema(session, organization_id="evil", project_id="p1", version=1) is None
