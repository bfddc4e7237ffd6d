"""FastAPI dependencies: the authenticated principal and the clients bound to it."""

from __future__ import annotations

from typing import Annotated, Any

from annocloud.common.v1 import common_pb2
from fastapi import Depends, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from annocloud_server.gateway.errors import ApiError
from annocloud_server.gateway.grpc_clients import Clients, bind
from annocloud_server.gateway.protojson import ID_PATTERN
from annocloud_server.gateway.settings import GatewaySettings
from annocloud_server.gateway.state import GatewayState

_bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token.")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")


def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


def get_settings(state: StateDep) -> GatewaySettings:
    return state.settings


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]


def get_principal(
    state: StateDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> common_pb2.Principal:
    """The caller of an API key from ``Authorization: Bearer`` or ``X-API-Key``; 401 otherwise."""
    key = api_key or (bearer.credentials if bearer is not None else None)
    if not key:
        raise ApiError(
            401, "API_KEY_MISSING", "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key'"
        )
    principal = state.api_keys.lookup(key.strip())
    if principal is None:
        raise ApiError(401, "API_KEY_INVALID", "the API key is not valid")
    return principal


PrincipalDep = Annotated[common_pb2.Principal, Depends(get_principal)]


def get_clients(state: StateDep, principal: PrincipalDep) -> Clients:
    settings = state.settings
    return bind(
        state.stubs,
        state.authenticator,
        principal,
        deadline=settings.grpc_deadline_seconds,
        stream_deadline=settings.grpc_stream_deadline_seconds,
    )


ClientsDep = Annotated[Clients, Depends(get_clients)]

PageSize = Annotated[int, Query(ge=0, le=1_000_000, description="At most this many (0 = server default).")]
PageToken = Annotated[str, Query(max_length=4096, description="next_page_token of the previous page.")]


def _id(description: str) -> Any:
    return Path(pattern=ID_PATTERN, description=description)


DatasetId = Annotated[str, _id("Dataset id.")]
ItemId = Annotated[str, _id("Item id.")]
ProjectId = Annotated[str, _id("Project id.")]
TaskId = Annotated[str, _id("Task id.")]
AnnotationId = Annotated[str, _id("Annotation id.")]
ReviewId = Annotated[str, _id("Review id.")]
ExportId = Annotated[str, _id("Export id.")]
SchemaVersion = Annotated[
    str, Path(pattern=r"^(latest|[1-9][0-9]{0,8})$", description="Version or 'latest'.")
]
VendorId = Annotated[
    str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Vendor (its organization id).")
]
WorkerId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Worker id.")]
