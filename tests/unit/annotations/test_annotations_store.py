"""annotations store and domain rules on a SQLite file, without sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.annotations import domain, store
from annocloud_server.annotations.models import AnnotationRow, Base
from annocloud_server.common.auth import ANNOTATOR, REVIEWER
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.errors import FailedPrecondition, NotFound, PermissionDenied


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(sqlite_url(str(tmp_path / "annotations.db")))
    database.create_tables(Base.metadata)
    return database


def row(org: str, annotation_id: str) -> AnnotationRow:
    now = datetime.now(UTC)
    return AnnotationRow(
        organization_id=org,
        project_id="p1",
        annotation_id=annotation_id,
        task=f"projects/p1/tasks/{annotation_id}",
        item="datasets/d1/items/i1",
        schema_version=1,
        annotator="user:a",
        labels=b"",
        revision=1,
        etag="e1",
        revised_by="user:a",
        create_time=now,
        update_time=now,
        media_type=1,
        file_name="f",
        width=1,
        height=1,
        text="",
    )


def test_revisions_are_kept_in_order_and_scoped(db: Database) -> None:
    """Each edit adds an immutable revision; other organizations do not see the annotation."""
    with db.transaction() as session:
        stored = store.insert_annotation(session, row=row("acme", "a1"))
        store.add_revision(
            session, row=stored, labels=b"x", etag="e2", revised_by="user:r", now=datetime.now(UTC)
        )
    with db.transaction() as session:
        current = store.get_annotation(session, organization_id="acme", project_id="p1", annotation_id="a1")
        assert (current.revision, current.etag) == (2, "e2")
        revisions = store.list_revisions(session, row=current, after=0, limit=10)
        assert [(r.revision, r.etag) for r in revisions] == [(1, "e1"), (2, "e2")]
        with pytest.raises(NotFound):
            store.get_annotation(session, organization_id="evil", project_id="p1", annotation_id="a1")
        assert store.annotation_for_task(session, organization_id="evil", task="projects/p1/tasks/a1") is None


def test_lease_rules() -> None:
    """Only the holder of the current unexpired lease of a LEASED task may submit."""
    now = datetime.now(UTC)
    task = tasks_pb2.Task(
        name="projects/p1/tasks/t",
        state=tasks_pb2.TASK_STATE_LEASED,
        lease=tasks_pb2.Lease(lease_id="L", worker="user:a"),
    )
    task.lease.expire_time.FromDatetime(now + timedelta(minutes=1))
    domain.check_lease(task, lease_id="L", worker="user:a", now=now)
    for lease_id, worker, at in (
        ("X", "user:a", now),
        ("L", "user:b", now),
        ("L", "user:a", now + timedelta(minutes=2)),
    ):
        with pytest.raises(FailedPrecondition):
            domain.check_lease(task, lease_id=lease_id, worker=worker, now=at)
    task.state = tasks_pb2.TASK_STATE_COMPLETED
    with pytest.raises(FailedPrecondition):
        domain.check_lease(task, lease_id="L", worker="user:a", now=now)


def test_who_may_revise() -> None:
    """The annotator and reviewers may edit; another annotator may not."""
    domain.check_may_revise(subject="user:a", roles=[ANNOTATOR], annotator="user:a")
    domain.check_may_revise(subject="user:r", roles=[REVIEWER], annotator="user:a")
    with pytest.raises(PermissionDenied):
        domain.check_may_revise(subject="user:b", roles=[ANNOTATOR], annotator="user:a")
