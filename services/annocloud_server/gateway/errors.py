"""Errors mapped once: gRPC statuses, validation failures and gateway errors → one JSON shape.

Every error response is ``{"error": {"code": <http>, "status": "<GRPC_CODE_NAME>", "reason":
"<REASON>", "message": "..."}}``; ``reason`` is the ``ErrorInfo`` reason the service raised.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from starlette.exceptions import HTTPException as StarletteHTTPException

from annocloud_server.common.errors import GRPC_TO_HTTP

log = logging.getLogger(__name__)

_HTTP_TO_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """An error the gateway itself detects (auth, bad body, bad query)."""

    def __init__(self, http_status: int, reason: str, message: str, *, status: str | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason
        self.message = message
        self.status = status or _HTTP_TO_STATUS.get(http_status, "UNKNOWN")


def bad_request(reason: str, message: str) -> ApiError:
    return ApiError(400, reason, message, status="INVALID_ARGUMENT")


def error_body(http_status: int, status: str, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"code": http_status, "status": status, "reason": reason, "message": message}}


def error_response(
    http_status: int, status: str, reason: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        error_body(http_status, status, reason, message), status_code=http_status, headers=headers
    )


def rpc_error_parts(exc: grpc.RpcError) -> tuple[int, str, str, str]:
    """(http status, gRPC code name, reason, message) of a failed call."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (exc.details() if isinstance(exc, grpc.Call) else None) or ""
    reason = code.name
    if isinstance(exc, grpc.Call):
        try:
            status = rpc_status.from_call(exc)
        except ValueError:
            status = None
        if status is not None:
            message = status.message or message
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason or reason
                    break
    http = GRPC_TO_HTTP.get(code, 500)
    if http >= 500 and code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        message = message or "internal error"
    return http, code.name, reason, message


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers that give every error the same JSON shape."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return error_response(exc.http_status, exc.status, exc.reason, exc.message, headers)

    async def on_rpc_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, grpc.RpcError)
        http, status, reason, message = rpc_error_parts(exc)
        if http >= 500:
            log.warning(
                "gRPC call failed for %s %s: %s %s", request.method, request.url.path, status, message
            )
        return error_response(http, status, reason, message)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        reason = (
            "BAD_REQUEST_BODY"
            if any(e.get("loc", ("",))[0] == "body" for e in exc.errors())
            else "BAD_REQUEST"
        )
        message = _validation_message(exc)
        content_type = request.headers.get("content-type", "")
        if (
            reason == "BAD_REQUEST_BODY"
            and content_type
            and "json" not in content_type
            and "multipart" not in content_type
        ):
            message += (
                f" (the body was sent as {content_type.split(';')[0]}; send Content-Type: application/json)"
            )
        return error_response(400, "INVALID_ARGUMENT", reason, message)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = _HTTP_TO_STATUS.get(exc.status_code, "UNKNOWN")
        reason = {404: "ROUTE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}.get(
            exc.status_code, status
        )
        return error_response(exc.status_code, status, reason, str(exc.detail), dict(exc.headers or {}))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(grpc.RpcError, on_rpc_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
