"""Event handlers: labels delivered by an ingestion import job or a model (modelassist) become
predictions (never human labels)."""

from __future__ import annotations

from datetime import UTC, datetime

from annocloud.events.v1 import events_pb2
from sqlalchemy.orm import Session

from annocloud_server.annotations import store
from annocloud_server.annotations.models import PredictionRow
from annocloud_server.common.paging import parse_name


def on_labels_imported(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    """Stores the imported labels as a prediction with the job's provenance.

    The prediction id is the event id, so even without the inbox a redelivery could not store it twice."""
    event = envelope.labels_imported
    (project_id,) = parse_name(event.project, "projects/{}")
    parse_name(event.item.name, "datasets/{}/items/{}")
    store.insert_prediction(
        session,
        row=PredictionRow(
            organization_id=envelope.tenant_id,
            project_id=project_id,
            prediction_id=envelope.event_id,
            item=event.item.name,
            model=event.model,
            model_version=event.model_version,
            score=event.score,
            labels=event.labels.SerializeToString(deterministic=True),
            create_time=datetime.now(UTC),
        ),
    )


def on_predictions_ready(session: Session, envelope: events_pb2.EventEnvelope) -> None:
    """Stores a model's pre-labels as a prediction with its provenance (model, version, score); the
    prediction id is the event id."""
    event = envelope.predictions_ready
    (project_id,) = parse_name(event.project, "projects/{}")
    parse_name(event.item.item, "datasets/{}/items/{}")
    store.insert_prediction(
        session,
        row=PredictionRow(
            organization_id=envelope.tenant_id,
            project_id=project_id,
            prediction_id=envelope.event_id,
            item=event.item.item,
            model=event.model,
            model_version=event.model_version,
            score=event.score,
            labels=event.labels.SerializeToString(deterministic=True),
            create_time=datetime.now(UTC),
        ),
    )
