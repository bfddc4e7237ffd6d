"""Wires the qa service: database, outbox, consumers of tasks and annotations events, gRPC."""

from __future__ import annotations

from annocloud.qa.v1 import qa_pb2_grpc

from annocloud_server.common.component import Component, ComponentContext
from annocloud_server.common.db import Database
from annocloud_server.common.events import TOPIC_ANNOTATIONS, TOPIC_QA, TOPIC_TASKS, EventWriter
from annocloud_server.common.server import ServiceRegistration
from annocloud_server.qa.handlers import make_handlers
from annocloud_server.qa.models import Base, inbox, outbox
from annocloud_server.qa.servicer import QaServicer


def create_component(ctx: ComponentContext) -> Component:
    db = Database(ctx.database_url)
    db.create_tables(Base.metadata)
    events = EventWriter(outbox, TOPIC_QA, ctx.on_outbox_commit)
    servicer = QaServicer(db, ctx.authenticator, events)
    return Component(
        name="qa",
        db=db,
        outbox=outbox,
        inbox=inbox,
        registrations=[
            ServiceRegistration(
                "annocloud.qa.v1.QaService",
                lambda server: qa_pb2_grpc.add_QaServiceServicer_to_server(servicer, server),
            )
        ],
        topics=[TOPIC_TASKS, TOPIC_ANNOTATIONS],
        handlers=make_handlers(events),
    )
