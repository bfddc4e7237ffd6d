"""Liveness and readiness probes and the Prometheus metrics page (no authentication)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from annocloud_server.gateway.deps import StateDep
from annocloud_server.gateway.grpc_clients import OPTIONAL_SERVICES, SERVICE_NAMES

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The gateway process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A required service is not serving."}})
def readyz(state: StateDep) -> JSONResponse:
    """Every required service answers its gRPC health check with SERVING. Optional ones
    (modelassist: pre-labels, rescoring) that do not are listed under ``degraded``."""
    services = state.stubs.health()
    optional = {SERVICE_NAMES[short] for short in OPTIONAL_SERVICES}
    ready = all(status == "SERVING" for name, status in services.items() if name not in optional)
    degraded = sorted(short for short in OPTIONAL_SERVICES if services.get(SERVICE_NAMES[short]) != "SERVING")
    body: dict[str, Any] = {
        "status": "ok" if ready else "unavailable",
        "services": services,
        "degraded": degraded,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics of the gateway (and of whatever else shares its registry)."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
