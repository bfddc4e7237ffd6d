"""gRPC plumbing: servers (error mapping, metrics, health, reflection, graceful shutdown) and the
client channels services and the gateway use (deadlines, retries, keepalive, message sizes).

``build_server`` returns the server and the port it bound, so tests start the real thing on port
0. Every servicer method may raise an :class:`~annocloud_server.common.errors.AnnocloudError`; the
interceptor turns it into a ``google.rpc.Status`` with an ``ErrorInfo`` carrying the reason.
Unexpected exceptions become INTERNAL without leaking internals.

``make_channel`` gives every client channel one gRPC service config: a default deadline per
method (streams get a longer one), transparent retries of idempotent reads (Get*/List*/Read* and
health checks) on UNAVAILABLE with exponential backoff and retry throttling, and never a retry of
a write (creates are idempotent on ``request_id``, so the *caller* may retry them).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from annocloud.annotations.v1 import annotations_pb2
from annocloud.export.v1 import export_pb2
from annocloud.ingestion.v1 import ingestion_pb2
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from annocloud_server.common.errors import ERROR_DOMAIN, AnnocloudError
from annocloud_server.common.metrics import GrpcMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceRegistration:
    """One gRPC service to host: its full name (for health and reflection) and how to add it."""

    full_name: str
    add_to_server: Callable[[grpc.Server], None]


def to_status(error: AnnocloudError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=error.grpc_code.value[0], message=error.message, details=[detail])
    return rpc_status.to_status(status)


def _internal_status() -> grpc.Status:
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message="internal error"))


def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, AnnocloudError):
        context.abort_with_status(to_status(exc))
    log.exception("unhandled error in RPC")
    context.abort_with_status(_internal_status())


Behavior = Callable[[Any, grpc.ServicerContext], Any]
StreamBehavior = Callable[[Any, grpc.ServicerContext], Iterator[Any]]


def _rewrap(
    handler: Any,
    wrap_unary: Callable[[Behavior], Behavior],
    wrap_stream: Callable[[StreamBehavior], StreamBehavior],
) -> Any:
    """``handler`` with its behavior wrapped (unary responses by ``wrap_unary``, streams by ``wrap_stream``)."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap_unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            wrap_stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer
        )
    return handler


class ErrorInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Maps domain errors to rich gRPC statuses, once, for every RPC shape."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None

        def wrap_unary(behavior: Behavior) -> Behavior:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behavior(request, context)
                except Exception as exc:
                    _abort(context, exc)

            return wrapped

        def wrap_stream(behavior: StreamBehavior) -> StreamBehavior:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from behavior(request, context)
                except Exception as exc:
                    _abort(context, exc)

            return wrapped

        return _rewrap(handler, wrap_unary, wrap_stream)


def _final_code(context: grpc.ServicerContext, failed: bool) -> str:
    read_code = getattr(context, "code", None)  # set by abort()/set_code(); None: returned normally
    code = read_code() if callable(read_code) else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if failed else "OK"


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Counts every call by final status code and times it (outermost: sees the mapped errors)."""

    def __init__(self, metrics: GrpcMetrics):
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED; not a label we keep
            return None
        method = handler_call_details.method
        observe = self._metrics.observe

        def wrap_unary(behavior: Behavior) -> Behavior:
            def timed(request: Any, context: grpc.ServicerContext) -> Any:
                began, failed = time.perf_counter(), True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    observe(method, _final_code(context, failed), time.perf_counter() - began)

            return timed

        def wrap_stream(behavior: StreamBehavior) -> StreamBehavior:
            def timed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                began, failed = time.perf_counter(), True
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    observe(method, _final_code(context, failed), time.perf_counter() - began)

            return timed

        return _rewrap(handler, wrap_unary, wrap_stream)


MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class GrpcServer:
    """A started gRPC server with its health servicer, for graceful shutdown."""

    def __init__(
        self, server: grpc.Server, port: int, health_servicer: health.HealthServicer, names: list[str]
    ):
        self.server = server
        self.port = port
        self.health = health_servicer
        self.names = names

    def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING first so load balancers drain, then stop accepting and wait for calls."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def build_server(
    registrations: Sequence[ServiceRegistration],
    *,
    address: str = "127.0.0.1:0",
    max_workers: int = 32,
    interceptors: Sequence[grpc.ServerInterceptor] = (),  # type: ignore[type-arg]
    metrics: GrpcMetrics | None = None,
) -> GrpcServer:
    """Builds and starts a server hosting ``registrations``; returns it with the bound port.

    With ``metrics``, every call is counted and timed (``annocloud_grpc_server_*``).
    """
    outermost = [MetricsInterceptor(metrics)] if metrics is not None else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=[*outermost, ErrorInterceptor(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Clients ping every KEEPALIVE_TIME_MS while calls are open; allow it (default: 5 min).
            ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
            ("grpc.http2.max_ping_strikes", 0),
            # A port already taken must fail the bind, not be shared silently with another server.
            ("grpc.so_reuseport", 0),
        ],
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [r.full_name for r in registrations]
    for registration in registrations:
        registration.add_to_server(server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind gRPC server to {address}")
    server.start()
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcServer(server, port, health_servicer, names)


# --- client channels ------------------------------------------------------------------------------

KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
UNARY_TIMEOUT_SECONDS = 30.0
STREAM_TIMEOUT_SECONDS = 600.0
MAX_RETRY_ATTEMPTS = 5  # gRPC's own cap
READ_PREFIXES = ("Get", "List", "Read")
SERVICES = tuple(
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (ingestion_pb2, "IngestionService"),
        (tasks_pb2, "TaskService"),
        (annotations_pb2, "AnnotationService"),
        (qa_pb2, "QaService"),
        (export_pb2, "ExportService"),
    )
)
HEALTH_SERVICE = "grpc.health.v1.Health"


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def service_config(
    *,
    unary_timeout: float = UNARY_TIMEOUT_SECONDS,
    stream_timeout: float = STREAM_TIMEOUT_SECONDS,
    read_attempts: int = 4,
) -> str:
    """The gRPC service config (JSON) of every annocloud channel.

    A call's own ``timeout=`` wins when it is shorter than the configured one. Reads are retried on
    UNAVAILABLE only (the server was not reached or is shutting down: safe and idempotent);
    retries stay inside the call's deadline and are throttled when most calls fail.
    """
    retry = {
        "maxAttempts": max(1, min(read_attempts, MAX_RETRY_ATTEMPTS)),
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    unary_reads: list[dict[str, str]] = [{"service": HEALTH_SERVICE, "method": "Check"}]
    stream_reads: list[dict[str, str]] = []
    streams: list[dict[str, str]] = [{"service": HEALTH_SERVICE, "method": "Watch"}]
    defaults: list[dict[str, str]] = []
    for service in SERVICES:
        defaults.append({"service": service.full_name})
        for method in service.methods:
            name = {"service": service.full_name, "method": method.name}
            streaming = method.client_streaming or method.server_streaming
            if method.name.startswith(READ_PREFIXES):
                (stream_reads if streaming else unary_reads).append(name)
            elif streaming:
                streams.append(name)
    method_config: list[dict[str, Any]] = [
        {"name": unary_reads, "timeout": _seconds(unary_timeout), "retryPolicy": retry},
        {"name": stream_reads, "timeout": _seconds(stream_timeout), "retryPolicy": retry},
        {"name": streams, "timeout": _seconds(stream_timeout)},
        {"name": [*defaults, {}], "timeout": _seconds(unary_timeout)},
    ]
    config = {
        "methodConfig": [c for c in method_config if c["name"]],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }
    return json.dumps(config, separators=(",", ":"))


def channel_options(**config: Any) -> list[tuple[str, Any]]:
    """Options of every annocloud client channel (``config``: :func:`service_config` arguments)."""
    return [
        ("grpc.service_config", service_config(**config)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        # A restarted peer is found again within seconds (gRPC's default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def make_channel(target: str, **config: Any) -> grpc.Channel:
    """An insecure channel to ``target`` with :func:`channel_options` (deadlines, retries, keepalive)."""
    return grpc.insecure_channel(target, options=channel_options(**config))
