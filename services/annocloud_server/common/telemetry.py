"""Telemetry in one place: tracer provider, gRPC and FastAPI instrumentation, event spans, JSON logs.

Exporters are off by default (spans are still created and their ids land in the logs); set
``ANNOCLOUD_OTEL_CONSOLE=1`` to print spans. Health-check spans are filtered out.

Events carry the W3C trace context of the span that emitted them (``inject_trace_context``), on
every bus (Kafka copies it into record headers too). The consumer applies each event in a CONSUMER
span whose parent is that context (``consume_span``), so a trace runs request → service → event →
consumer → the events that consumer emits; a relay publishes each batch in a PRODUCER span linked
to the contexts of its events (``publish_span``). Metrics live in ``metrics.py``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from annocloud.events.v1 import events_pb2
from google.protobuf.message import DecodeError
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import SpanKind

_configured = False
_EXCLUDED_URLS = "healthz,readyz,metrics"
MAX_SPAN_LINKS = 32
"""A relay batch span links to at most this many of its events' contexts."""

_tracer = trace.get_tracer("annocloud_server.events")


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the active trace and span ids."""

    def format(self, record: logging.LogRecord) -> str:
        span = trace.get_current_span().get_span_context()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def setup_tracing(service_name: str) -> None:
    """Installs the tracer provider and the gRPC client/server instrumentation (once per process)."""
    global _configured
    if _configured:
        return
    _configured = True
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if os.environ.get("ANNOCLOUD_OTEL_CONSOLE") == "1":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcInstrumentorServer, filters

    not_health = filters.negate(filters.health_check())
    GrpcInstrumentorServer(filter_=not_health).instrument()
    GrpcInstrumentorClient(filter_=not_health).instrument()


def instrument_fastapi(app: Any) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=_EXCLUDED_URLS)


def inject_trace_context(carrier: MutableMapping[str, str]) -> None:
    """Writes the current span's W3C trace context (``traceparent``, ``tracestate``) into ``carrier``."""
    propagate.inject(carrier)


def producer_context(envelope: events_pb2.EventEnvelope) -> Any:
    """The context an event was emitted in (an empty context when it carries none)."""
    return propagate.extract(dict(envelope.trace_context))


@contextmanager
def consume_span(
    envelope: events_pb2.EventEnvelope, *, system: str, topic: str, partition: int, group: str
) -> Iterator[trace.Span]:
    """The CONSUMER span applying one event, child of the span that emitted it."""
    with _tracer.start_as_current_span(
        f"consume {envelope.event_type}",
        context=producer_context(envelope),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": system,
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.consumer.group.name": group,
            "messaging.message.id": envelope.event_id,
            "messaging.operation.type": "process",
            "annocloud.event_type": envelope.event_type,
        },
    ) as span:
        yield span


@contextmanager
def publish_span(
    *, system: str, relay: str, topics: Sequence[str], values: Sequence[bytes]
) -> Iterator[trace.Span]:
    """The PRODUCER span of one relay batch, linked to the contexts its events were emitted in."""
    with _tracer.start_as_current_span(
        f"publish {topics[0]}" if len(topics) == 1 else "publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": system,
            "messaging.destination.name": ",".join(topics),
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(values),
            "annocloud.relay": relay,
        },
    ) as span:
        if span.is_recording():
            for value in values[:MAX_SPAN_LINKS]:
                try:
                    envelope = events_pb2.EventEnvelope.FromString(value)
                except DecodeError:
                    continue
                emitted = trace.get_current_span(producer_context(envelope)).get_span_context()
                if emitted.is_valid:
                    span.add_link(emitted, {"messaging.message.id": envelope.event_id})
        yield span
