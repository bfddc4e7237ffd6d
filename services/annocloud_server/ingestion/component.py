"""Wires the ingestion service into a runtime."""

from __future__ import annotations

import grpc
from annocloud.ingestion.v1 import ingestion_pb2_grpc

from annocloud_server.common.component import Component, ComponentContext
from annocloud_server.common.db import Database
from annocloud_server.common.events import TOPIC_INGESTION, EventWriter
from annocloud_server.common.server import ServiceRegistration
from annocloud_server.common.tasks_client import TasksClient
from annocloud_server.ingestion.detector import SensitiveRegionDetector
from annocloud_server.ingestion.import_jobs import ImportJobs
from annocloud_server.ingestion.ingest import Ingestor
from annocloud_server.ingestion.models import Base, inbox, outbox
from annocloud_server.ingestion.servicer import IngestionServicer
from annocloud_server.ingestion.settings import IngestionSettings


def create_component(ctx: ComponentContext, settings: IngestionSettings | None = None) -> Component:
    db = Database(ctx.database_url)
    db.create_tables(Base.metadata)
    writer = EventWriter(outbox, TOPIC_INGESTION, ctx.on_outbox_commit)
    ingestor = Ingestor(db, ctx.blob_store, writer, settings or IngestionSettings.from_env())
    imports = ImportJobs(ingestor)
    tasks = TasksClient(lambda: ctx.channel_to("tasks"))
    detector = SensitiveRegionDetector(lambda: ctx.channel_to("modelassist"))
    servicer = IngestionServicer(ctx.authenticator, db, ingestor, imports, tasks, detector)

    def add(server: grpc.Server) -> None:
        ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    return Component(
        name="ingestion",
        db=db,
        outbox=outbox,
        inbox=inbox,
        registrations=[ServiceRegistration("annocloud.ingestion.v1.IngestionService", add)],
        background=[imports],
    )
