"""Event handlers: labels delivered by an ingestion import job or a model (modelassist) become
predictions (never human labels)."""

from __future__ import annotations

from datetime import UTC, datetime

from annocloud.annotations.v1 import annotations_pb2
from annocloud.events.v1 import events_pb2
from sqlalchemy.orm import Session

from annocloud_server.annotations import store
from annocloud_server.annotations.models import PredictionRow
from annocloud_server.common.paging import parse_name


def _store_prediction(
    session: Session,
    envelope: events_pb2.EventEnvelope,
    *,
    project: str,
    item: str,
    model: str,
    model_version: str,
    score: float,
    labels: annotations_pb2.Labels,
) -> None:
    """A prediction with its provenance; its id is the event id, so even without the inbox a
    redelivery could not store it twice."""
    (project_id,) = parse_name(project, "projects/{}")
    parse_name(item, "datasets/{}/items/{}")
    store.insert_prediction(
        session,
        row=PredictionRow(
            organization_id=envelope.tenant_id,
            project_id=project_id,
            prediction_id=envelope.event_id,
            item=item,
            model=model,
            model_version=model_version,
            score=score,
            labels=labels.SerializeToString(deterministic=True),
            create_time=datetime.now(UTC),
        ),
    )


def on_labels_imported(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    """Stores the imported labels as a prediction with the job's provenance."""
    event = envelope.labels_imported
    _store_prediction(
        session,
        envelope,
        project=event.project,
        item=event.item.name,
        model=event.model,
        model_version=event.model_version,
        score=event.score,
        labels=event.labels,
    )


def on_predictions_ready(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    """Stores a model's pre-labels as a prediction with its provenance (model, version, score)."""
    event = envelope.predictions_ready
    _store_prediction(
        session,
        envelope,
        project=event.project,
        item=event.item.item,
        model=event.model,
        model_version=event.model_version,
        score=event.score,
        labels=event.labels,
    )
