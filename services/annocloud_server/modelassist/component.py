"""Wires modelassist: database, outbox, the ModelAssistService, its consumers, the Triton worker and
readiness (the service is ready only while its Triton server is)."""

from __future__ import annotations

import logging
import os
import threading

from annocloud.modelassist.v1 import modelassist_pb2_grpc

from annocloud_server.common.component import Background, Component, ComponentContext
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
from annocloud_server.common.triton import TritonClient, TritonUnavailable
from annocloud_server.modelassist.handlers import handlers
from annocloud_server.modelassist.models import Base, inbox, outbox
from annocloud_server.modelassist.servicer import ModelAssistServicer
from annocloud_server.modelassist.worker import AssistWorker

log = logging.getLogger(__name__)

INTERVAL_ENV = "ANNOCLOUD_MODELASSIST_INTERVAL_SECONDS"
TIMEOUT_ENV = "ANNOCLOUD_MODELASSIST_TRITON_TIMEOUT_SECONDS"


class TritonConnection:
    """One lazily opened client per process, shared by the worker, the servicer and readiness."""

    def __init__(self, url: str, timeout: float):
        self.url = url
        self._timeout = timeout
        self._client: TritonClient | None = None
        self._lock = threading.Lock()

    def __call__(self) -> TritonClient:
        with self._lock:
            if self._client is None:
                self._client = TritonClient(self.url, timeout=self._timeout)
            return self._client

    def ready(self) -> bool:
        try:
            return self().is_ready(timeout=2.0)
        except TritonUnavailable:
            return False


def _float_env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, "") or default)
    except ValueError:
        log.warning("%s is not a number; using %s", name, default)
        return default
    return value if value > 0 else default


def create_component(ctx: ComponentContext) -> Component:
    db = Database(ctx.database_url)
    db.create_tables(Base.metadata)
    writer = EventWriter(outbox, TOPIC_MODELASSIST, ctx.on_outbox_commit)
    triton = TritonConnection(ctx.triton_url, _float_env(TIMEOUT_ENV, 30.0)) if ctx.triton_url else None
    if triton is None:
        log.warning(
            "modelassist: no Triton server configured (ANNOCLOUD_TRITON_URL); "
            "pre-labels, rescoring and de-identification are off"
        )
    servicer = ModelAssistServicer(db, writer, ctx.authenticator, triton)
    background: list[Background] = []
    if triton is not None:
        background.append(
            AssistWorker(
                db,
                writer,
                ctx.blob_store,
                triton,
                interval=_float_env(INTERVAL_ENV, 0.5),
                timeout=_float_env(TIMEOUT_ENV, 30.0),
            )
        )
    return Component(
        name="modelassist",
        db=db,
        outbox=outbox,
        inbox=inbox,
        registrations=[
            ServiceRegistration(
                "annocloud.modelassist.v1.ModelAssistService",
                lambda server: modelassist_pb2_grpc.add_ModelAssistServiceServicer_to_server(
                    servicer, server
                ),
            )
        ],
        topics=[TOPIC_TASKS, TOPIC_INGESTION, TOPIC_QA, TOPIC_ANNOTATIONS],
        handlers=handlers(),
        background=background,
        readiness=triton.ready if triton is not None else None,
    )
