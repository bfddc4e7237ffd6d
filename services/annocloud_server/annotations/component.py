"""Wires the annotations service: database, outbox, gRPC registration, tasks client."""

from __future__ import annotations

from annocloud.annotations.v1 import annotations_pb2_grpc
from annocloud.events.v1 import events_pb2

from annocloud_server.annotations.handlers import on_labels_imported, on_predictions_ready
from annocloud_server.annotations.models import Base, inbox, outbox
from annocloud_server.annotations.servicer import AnnotationServicer
from annocloud_server.common.component import Component, ComponentContext
from annocloud_server.common.db import Database
from annocloud_server.common.events import (
    TOPIC_ANNOTATIONS,
    TOPIC_INGESTION,
    TOPIC_MODELASSIST,
    EventWriter,
    event_type_of,
)
from annocloud_server.common.server import ServiceRegistration
from annocloud_server.common.tasks_client import TasksClient


def create_component(ctx: ComponentContext) -> Component:
    db = Database(ctx.database_url)
    db.create_tables(Base.metadata)
    events = EventWriter(outbox, TOPIC_ANNOTATIONS, ctx.on_outbox_commit)
    servicer = AnnotationServicer(db, ctx.authenticator, events, TasksClient(lambda: ctx.channel_to("tasks")))
    return Component(
        name="annotations",
        db=db,
        outbox=outbox,
        inbox=inbox,
        registrations=[
            ServiceRegistration(
                "annocloud.annotations.v1.AnnotationService",
                lambda server: annotations_pb2_grpc.add_AnnotationServiceServicer_to_server(servicer, server),
            )
        ],
        topics=[TOPIC_INGESTION, TOPIC_MODELASSIST],
        handlers={
            event_type_of(events_pb2.LabelsImported): on_labels_imported,
            event_type_of(events_pb2.PredictionsReady): on_predictions_ready,
        },
    )
