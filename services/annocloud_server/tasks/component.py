"""Wires the tasks service: database, outbox writer, gRPC servicer, consumers and the lease sweeper."""

from __future__ import annotations

import logging
import os
import threading

from annocloud.tasks.v1 import tasks_pb2_grpc, workforce_pb2_grpc

from annocloud_server.common.component import Component, ComponentContext
from annocloud_server.common.db import Database
from annocloud_server.common.events import (
    TOPIC_ANNOTATIONS,
    TOPIC_INGESTION,
    TOPIC_MODELASSIST,
    TOPIC_QA,
    TOPIC_TASKS,
    EventWriter,
)
from annocloud_server.common.server import ServiceRegistration
from annocloud_server.tasks import store
from annocloud_server.tasks.handlers import TaskEventHandlers
from annocloud_server.tasks.models import Base, inbox, outbox
from annocloud_server.tasks.servicer import TaskServicer
from annocloud_server.tasks.workforce_servicer import WorkforceServicer

log = logging.getLogger(__name__)

SWEEP_INTERVAL_ENV = "ANNOCLOUD_TASKS_LEASE_SWEEP_SECONDS"
DEFAULT_SWEEP_INTERVAL = 5.0


class LeaseSweeper:
    """Background loop: every ``interval`` seconds, lapsed leases go back to the queue (TaskExpired)."""

    def __init__(self, db: Database, writer: EventWriter, *, interval: float = DEFAULT_SWEEP_INTERVAL):
        self._db = db
        self._writer = writer
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> int:
        """Expires every lapsed lease now (in batches); returns how many."""
        total = 0
        while True:
            with self._db.transaction() as session:
                count = store.expire_leases(session, self._writer, now=store.utcnow())
            total += count
            if count == 0:
                return total

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tasks-lease-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep_once()
            except Exception:
                log.exception("lease sweep failed; retrying next round")


def sweep_interval_from_env() -> float:
    raw = os.environ.get(SWEEP_INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_SWEEP_INTERVAL
    except ValueError:
        log.warning("%s=%r is not a number; using %s", SWEEP_INTERVAL_ENV, raw, DEFAULT_SWEEP_INTERVAL)
        return DEFAULT_SWEEP_INTERVAL
    return value if value > 0 else DEFAULT_SWEEP_INTERVAL


def create_component(ctx: ComponentContext) -> Component:
    db = Database(ctx.database_url)
    db.create_tables(Base.metadata)
    writer = EventWriter(outbox, TOPIC_TASKS, ctx.on_outbox_commit)
    servicer = TaskServicer(db, writer, ctx.authenticator)
    workforce_servicer = WorkforceServicer(db, writer, ctx.authenticator)
    handlers = TaskEventHandlers(writer)
    return Component(
        name="tasks",
        db=db,
        outbox=outbox,
        inbox=inbox,
        registrations=[
            ServiceRegistration(
                "annocloud.tasks.v1.TaskService",
                lambda server: tasks_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server),
            ),
            ServiceRegistration(
                "annocloud.tasks.v1.WorkforceService",
                lambda server: workforce_pb2_grpc.add_WorkforceServiceServicer_to_server(
                    workforce_servicer, server
                ),
            ),
        ],
        topics=[TOPIC_INGESTION, TOPIC_ANNOTATIONS, TOPIC_QA, TOPIC_MODELASSIST],
        handlers=handlers.by_event_type(),
        background=[LeaseSweeper(db, writer, interval=sweep_interval_from_env())],
    )
