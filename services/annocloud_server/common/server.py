"""Building gRPC servers: error mapping, health per service name, reflection, graceful shutdown.

``build_server`` returns the server and the port it bound, so tests start the real thing on port
0. Every servicer method may raise an :class:`~annocloud_server.common.errors.AnnocloudError`; the
interceptor turns it into a ``google.rpc.Status`` with an ``ErrorInfo`` carrying the reason.
Unexpected exceptions become INTERNAL without leaking internals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from annocloud_server.common.errors import ERROR_DOMAIN, AnnocloudError

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

        def wrap_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behavior(request, context)
                except Exception as exc:
                    _abort(context, exc)

            return wrapped

        def wrap_stream(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from behavior(request, context)
                except Exception as exc:
                    _abort(context, exc)

            return wrapped

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
) -> GrpcServer:
    """Builds and starts a server hosting ``registrations``; returns it with the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=[ErrorInterceptor(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
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
