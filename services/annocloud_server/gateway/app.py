"""The FastAPI application: ``create_app`` wires settings, gRPC stubs, auth and routes (no globals)."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from fastapi import FastAPI
from fastapi.routing import APIRoute

from annocloud_server.common.auth import Authenticator
from annocloud_server.gateway.apikeys import ApiKeyStore
from annocloud_server.gateway.errors import install_error_handlers
from annocloud_server.gateway.grpc_clients import ServiceStubs
from annocloud_server.gateway.limits import BodyLimitMiddleware
from annocloud_server.gateway.routes import annotations as annotation_routes
from annocloud_server.gateway.routes import datasets, exports, health, items, projects, qa, tasks
from annocloud_server.gateway.settings import GatewaySettings
from annocloud_server.gateway.state import GatewayState


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(
    settings: GatewaySettings,
    *,
    channel: grpc.Channel | Mapping[str, grpc.Channel],
    authenticator: Authenticator,
    api_keys: ApiKeyStore,
) -> FastAPI:
    """The REST gateway over ``channel`` (one for every service, or one per service short name)."""
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
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_upload_bytes=settings.max_upload_bytes,
        max_json_bytes=settings.max_json_bytes,
    )
    app.include_router(health.router)
    for module in (datasets, items, projects, tasks, annotation_routes, qa, exports):
        app.include_router(module.router, prefix="/v1")
    return app
