"""Error mapping: gRPC codes and reasons, validation failures and oversize bodies."""

from __future__ import annotations

import grpc
import pytest
from annocloud_server.common.auth import Authenticator
from annocloud_server.gateway.apikeys import ApiKeyStore
from annocloud_server.gateway.app import create_app
from annocloud_server.gateway.settings import GatewaySettings
from fastapi.testclient import TestClient


@pytest.mark.parametrize(
    ("project", "http", "status", "reason"),
    [
        ("missing", 404, "NOT_FOUND", "THING_NOT_FOUND"),
        ("bad", 400, "INVALID_ARGUMENT", "BAD_THING"),
        ("denied", 403, "PERMISSION_DENIED", "ROLE_REQUIRED"),
        ("stale", 409, "ABORTED", "ETAG_MISMATCH"),
    ],
)
def test_grpc_errors_map_to_http(gw, project, http, status, reason):
    """Service errors keep their ErrorInfo reason and map through GRPC_TO_HTTP."""
    response = gw.client.get(f"/v1/projects/{project}", headers=gw.auth())
    assert response.status_code == http
    assert response.json()["error"]["status"] == status
    assert response.json()["error"]["reason"] == reason
    assert response.json()["error"]["code"] == http
    assert response.json()["error"]["message"]


def test_stale_etag_on_patch_is_409(gw):
    """PATCH with a stale etag → 409 ABORTED."""
    response = gw.client.patch(
        "/v1/projects/p1/annotations/a1",
        json={"labels": {"classes": ["x"]}, "etag": "stale"},
        headers=gw.auth(),
    )
    assert response.status_code == 409
    assert response.json()["error"]["reason"] == "ETAG_MISMATCH"


def test_service_crash_is_500_without_internals(gw):
    """An unexpected exception in a service → 500 INTERNAL in the JSON shape, no traceback text."""
    response = gw.client.get("/v1/datasets/boom/items", headers=gw.auth())
    assert response.status_code == 500
    assert response.json()["error"]["status"] == "INTERNAL"
    assert "RuntimeError" not in response.text


def test_bad_path_id_is_400(gw):
    """Path ids must match ^[a-z0-9][a-z0-9-]{0,62}$."""
    for path in ("/v1/datasets/UPPER", "/v1/datasets/a_b", "/v1/projects/-x", "/v1/projects/" + "a" * 64):
        response = gw.client.get(path, headers=gw.auth())
        assert response.status_code == 400, path
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert gw.calls.log == []


def test_bad_query_params_are_400(gw):
    """Negative page_size, non-int page_size and unknown enum values → 400."""
    for query in ("page_size=-1", "page_size=abc"):
        response = gw.client.get(f"/v1/datasets?{query}", headers=gw.auth())
        assert response.status_code == 400
        assert response.json()["error"]["reason"] == "BAD_REQUEST"
    response = gw.client.get("/v1/projects/p1/tasks?state=SLEEPING", headers=gw.auth())
    assert response.status_code == 400
    assert response.json()["error"]["reason"] == "BAD_ENUM_VALUE"
    response = gw.client.get("/v1/projects/p1/annotations?item=not-an-item", headers=gw.auth())
    assert response.status_code == 400
    assert gw.calls.log == []


def test_body_parse_errors_are_400(gw):
    """Invalid JSON, non-objects, unknown fields and wrong types → 400 BAD_REQUEST_BODY."""
    headers = {**gw.auth(), "Content-Type": "application/json"}
    cases = [
        ("/v1/datasets", b"{not json"),
        ("/v1/datasets", b"[1, 2]"),
        ("/v1/datasets", b'{"display_name": "x", "colour": "red"}'),
        ("/v1/datasets", b'{"display_name": 5}'),
        ("/v1/projects", b'{"project": {"redundancy": "many"}}'),
        ("/v1/projects", b'{"project": {}, "parent": "x"}'),
        ("/v1/projects/p1/tasks:leaseNext", b'{"lease_seconds": "soon"}'),
        ("/v1/projects/p1/tasks/t1:submit", b'{"lease_id": "l", "labels": {"classes": "cat"}}'),
        ("/v1/projects/p1/exports", b'{"format": "BMP"}'),
        ("/v1/projects/p1:addDataset", b'{"dataset": "datasets/Bad Name"}'),
        ("/v1/projects/p1/reviews/r1:reject", b'{"reason": "x"}'),
    ]
    for path, body in cases:
        response = gw.client.post(path, content=body, headers=headers)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert response.json()["error"]["reason"] in {
            "BAD_REQUEST_BODY",
            "BAD_ENUM_VALUE",
            "BAD_RESOURCE_NAME",
        }
    assert gw.calls.log == []


def test_oversize_json_is_413(small_gw):
    """A JSON body over the JSON limit → 413 before the service is called."""
    body = {"display_name": "x" * 5_000}
    response = small_gw.client.post("/v1/datasets", json=body, headers=small_gw.auth())
    assert response.status_code == 413
    assert response.json()["error"]["reason"] == "BODY_TOO_LARGE"
    assert small_gw.calls.log == []


def test_oversize_streamed_body_is_413(small_gw):
    """A chunked body without Content-Length is counted while it streams."""

    def chunks():
        for _ in range(10):
            yield b"x" * 500

    headers = {**small_gw.auth(), "Content-Type": "application/json"}
    response = small_gw.client.post("/v1/datasets", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["reason"] == "BODY_TOO_LARGE"


def test_oversize_upload_is_413(small_gw):
    """An upload over the upload limit → 413."""
    files = {"file": ("big.bin", b"x" * 20_000, "application/octet-stream")}
    response = small_gw.client.post("/v1/datasets/d1/items:upload", files=files, headers=small_gw.auth())
    assert response.status_code == 413
    assert small_gw.calls.log == []


def test_unknown_route_is_json_404(gw):
    """Unknown routes answer in the same error shape."""
    response = gw.client.get("/v1/nothing", headers=gw.auth())
    assert response.status_code == 404
    assert response.json()["error"]["reason"] == "ROUTE_NOT_FOUND"


def test_unavailable_service_is_503(tmp_path):
    """A service that cannot be reached → 503 UNAVAILABLE (after the read retries), readyz 503."""
    channel = grpc.insecure_channel("127.0.0.1:1")
    store = ApiKeyStore(tmp_path)
    key = store.create_key("acme", "key:a", ["admin"])
    settings = GatewaySettings(grpc_deadline_seconds=2, read_retry_attempts=2)
    app = create_app(settings, channel=channel, authenticator=Authenticator(b"s" * 16), api_keys=store)
    with TestClient(app) as client:
        response = client.get("/v1/datasets", headers={"X-API-Key": key})
        assert response.status_code == 503
        assert response.json()["error"]["status"] == "UNAVAILABLE"
        assert client.get("/readyz").status_code == 503
    channel.close()


def test_missing_channel_is_refused(tmp_path):
    """Per-service channels must cover every service."""
    channel = grpc.insecure_channel("127.0.0.1:1")
    with pytest.raises(ValueError, match="no channel"):
        create_app(
            GatewaySettings(),
            channel={"ingestion": channel},
            authenticator=Authenticator(b"s" * 16),
            api_keys=ApiKeyStore(tmp_path),
        )
    channel.close()
