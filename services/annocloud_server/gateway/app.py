"""The FastAPI application: ``create_app`` wires settings, gRPC stubs, auth, metrics and routes (no globals)."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from prometheus_client import CollectorRegistry

from annocloud_server.common.auth import Authenticator
from annocloud_server.common.metrics import HttpMetrics, HttpMetricsMiddleware, new_registry
from annocloud_server.gateway.apikeys import ApiKeyStore
from annocloud_server.gateway.errors import install_error_handlers
from annocloud_server.gateway.grpc_clients import ServiceStubs
from annocloud_server.gateway.limits import BodyLimitMiddleware
from annocloud_server.gateway.routes import annotations as annotation_routes
from annocloud_server.gateway.routes import datasets, exports, health, imports, items, projects, qa, tasks
from annocloud_server.gateway.routes import modelassist as modelassist_routes
from annocloud_server.gateway.routes import versions as version_routes
from annocloud_server.gateway.routes import workforce as workforce_routes
from annocloud_server.gateway.settings import GatewaySettings
from annocloud_server.gateway.state import GatewayState


def _operation_id(route: APIRoute) -> str:
    return route.name


def route_templates(app: FastAPI) -> list[str]:
    """Every route's full path template (router prefixes included), in matching order."""
    return [c.path_format for c in iter_route_contexts(app.routes) if c.path_format]


def create_app(
    settings: GatewaySettings,
    *,
    channel: grpc.Channel | Mapping[str, grpc.Channel],
    authenticator: Authenticator,
    api_keys: ApiKeyStore,
    metrics_registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The REST gateway over ``channel`` (one for every service, or one per service short name).

    ``GET /metrics`` serves ``metrics_registry`` (a fresh one when None) with the HTTP metrics;
    the embedded default can pass its runtime's registry to expose everything on one page.
    """
    app = FastAPI(
        title="annocloud",
        version="1.0.0",
        description="REST API of the annocloud annotation cloud. Authenticate with an API key.",
        generate_unique_id_function=_operation_id,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.gateway = GatewayState(
        settings=settings, stubs=ServiceStubs(channel), authenticator=authenticator, api_keys=api_keys
    )
    registry = metrics_registry if metrics_registry is not None else new_registry()
    app.state.metrics_registry = registry
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_upload_bytes=settings.max_upload_bytes,
        max_json_bytes=settings.max_json_bytes,
    )
    # Added last = outermost: it also sees what the body limit rejects.
    app.add_middleware(
        HttpMetricsMiddleware, metrics=HttpMetrics(registry), templates=lambda: route_templates(app)
    )
    app.include_router(health.router)
    for module in (
        datasets,
        items,
        imports,
        projects,
        tasks,
        annotation_routes,
        qa,
        exports,
        workforce_routes,
        modelassist_routes,
    ):
        app.include_router(module.router, prefix="/v1")
    app.include_router(version_routes.router, prefix="/v1")
    return app
