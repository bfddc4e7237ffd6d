"""Labels delivered by an import job are stored as predictions, never as human annotations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.events.v1 import events_pb2
from annocloud.ingestion.v1 import ingestion_pb2
from annocloud_server.annotations import store
from annocloud_server.annotations.handlers import on_labels_imported
from annocloud_server.annotations.models import AnnotationRow, Base
from annocloud_server.common.db import Database, sqlite_url
from sqlalchemy import select


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(sqlite_url(str(tmp_path / "annotations.db")))
    database.create_tables(Base.metadata)
    yield database
    database.dispose()


def envelope(org: str = "acme") -> events_pb2.EventEnvelope:
    labels = ann.Labels(regions=[ann.Region(label="car", box=ann.Box(x=1, y=2, width=3, height=4))])
    return events_pb2.EventEnvelope(
        event_id="ev1",
        event_type="annocloud.events.v1.LabelsImported",
        tenant_id=org,
        labels_imported=events_pb2.LabelsImported(
            item=ingestion_pb2.Item(name="datasets/d1/items/i1", file_name="a.png"),
            project="projects/p1",
            import_job="datasets/d1/imports/j1",
            model="import:coco",
            model_version="j1",
            score=1.0,
            labels=labels,
        ),
    )


def test_imported_labels_become_a_prediction_with_provenance(db: Database) -> None:
    """The handler stores one prediction of the tenant's project (model import:coco, version = job id,
    score 1.0, the labels byte for byte) and no annotation."""
    with db.transaction() as session:
        on_labels_imported(session, envelope())
    with db.transaction() as session:
        (row,) = store.list_predictions(
            session, organization_id="acme", project_id="p1", item="datasets/d1/items/i1", after=0, limit=10
        )
        assert (row.model, row.model_version, row.score, row.prediction_id) == (
            "import:coco",
            "j1",
            1.0,
            "ev1",
        )
        assert ann.Labels.FromString(row.labels).regions[0].box.height == 4
        assert session.scalars(select(AnnotationRow)).all() == []
        assert (
            store.list_predictions(
                session, organization_id="globex", project_id="p1", item="", after=0, limit=10
            )
            == []
        )
