"""Authentication: API keys, 401s, and the signed principal reaching the services."""

from __future__ import annotations

from annocloud.common.v1 import common_pb2


def test_missing_key_is_401_json(gw):
    """No key → 401 with the JSON error shape and a WWW-Authenticate header."""
    response = gw.client.get("/v1/datasets")
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": 401,
        "status": "UNAUTHENTICATED",
        "reason": "API_KEY_MISSING",
        "message": response.json()["error"]["message"],
    }
    assert response.headers["www-authenticate"] == "Bearer"
    assert gw.calls.log == []


def test_unknown_key_is_401(gw):
    """An unknown key (bearer or X-API-Key) → 401 API_KEY_INVALID and no service call."""
    for headers in ({"Authorization": "Bearer ak_nope"}, {"X-API-Key": "ak_nope"}, {"X-API-Key": "garbage"}):
        response = gw.client.get("/v1/datasets", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["reason"] == "API_KEY_INVALID"
    assert gw.calls.log == []


def test_principal_is_signed_into_the_call(gw):
    """The fake verifies the signed metadata and sees the key's organization, subject and roles."""
    response = gw.client.get("/v1/datasets", headers={"X-API-Key": gw.keys["other"]})
    assert response.status_code == 200
    _, principal = gw.calls.last("ListDatasets")
    assert principal.organization_id == "globex"
    assert principal.subject == "key:other"
    assert set(principal.roles) == {common_pb2.ROLE_PROJECT_MANAGER, common_pb2.ROLE_REVIEWER}


def test_bearer_key_works(gw):
    """Authorization: Bearer carries the key too."""
    response = gw.client.get("/v1/projects", headers=gw.auth("annotator"))
    assert response.status_code == 200
    _, principal = gw.calls.last("ListProjects")
    assert principal.subject == "user:ann"
    assert list(principal.roles) == [common_pb2.ROLE_ANNOTATOR]


def test_health_needs_no_key(gw):
    """/healthz and /readyz are open; readyz is 200 when every required service is SERVING and lists
    the optional modelassist (not served by these fakes) as degraded."""
    assert gw.client.get("/healthz").json() == {"status": "ok"}
    ready = gw.client.get("/readyz")
    assert ready.status_code == 200
    services = ready.json()["services"]
    assert {v for k, v in services.items() if "modelassist" not in k} == {"SERVING"}
    assert ready.json()["degraded"] == ["modelassist"]
