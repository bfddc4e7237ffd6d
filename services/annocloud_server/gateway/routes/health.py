"""Liveness and readiness probes and the Prometheus metrics page (no authentication)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from annocloud_server.gateway.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The gateway process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A service is not serving."}})
def readyz(state: StateDep) -> JSONResponse:
    """Every service answers its gRPC health check with SERVING."""
    services = state.stubs.health()
    ready = all(status == "SERVING" for status in services.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "services": services}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics of the gateway (and of whatever else shares its registry)."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
