"""Wires the export service: database, servicer, event handlers and the export worker."""

from __future__ import annotations

from annocloud.events.v1 import events_pb2
from annocloud.export.v1 import export_pb2_grpc

from annocloud_server.common.component import Component, ComponentContext
from annocloud_server.common.db import Database
from annocloud_server.common.events import TOPIC_EXPORT, TOPIC_QA, TOPIC_TASKS, EventWriter, event_type_of
from annocloud_server.common.server import ServiceRegistration
from annocloud_server.export import handlers
from annocloud_server.export.models import Base, inbox, outbox
from annocloud_server.export.servicer import ExportServicer
from annocloud_server.export.worker import ExportWorker


def create_component(ctx: ComponentContext) -> Component:
    db = Database(ctx.database_url)
    db.create_tables(Base.metadata)
    events = EventWriter(outbox, TOPIC_EXPORT, ctx.on_outbox_commit)
    worker = ExportWorker(
        db=db, events=events, blob_store=ctx.blob_store, tmp_dir=ctx.data_dir / "export-tmp"
    )
    servicer = ExportServicer(
        db=db, authenticator=ctx.authenticator, blob_store=ctx.blob_store, wake=worker.wake, events=events
    )
    return Component(
        name="export",
        db=db,
        outbox=outbox,
        inbox=inbox,
        registrations=[
            ServiceRegistration(
                "annocloud.export.v1.ExportService",
                lambda server: export_pb2_grpc.add_ExportServiceServicer_to_server(servicer, server),
            )
        ],
        topics=[TOPIC_TASKS, TOPIC_QA],
        handlers={
            event_type_of(events_pb2.ProjectCreated): handlers.on_project_created,
            event_type_of(events_pb2.LabelSchemaPublished): handlers.on_label_schema_published,
            event_type_of(events_pb2.ItemAccepted): handlers.on_item_accepted,
        },
        background=[worker],
    )
