"""The Python SDK against a mock transport: paths, auth, paging, uploads, errors, exports."""

from __future__ import annotations

import json

import httpx
import pytest
from annocloud_sdk import ApiError, Client


class Recorder:
    """A mock gateway: answers by (method, path) and records every request."""

    def __init__(self, routes):
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return httpx.Response(
                404,
                json={
                    "error": {"code": 404, "status": "NOT_FOUND", "reason": "ROUTE_NOT_FOUND", "message": "x"}
                },
            )
        return handler(request) if callable(handler) else httpx.Response(200, json=handler)


def make_client(routes) -> tuple[Client, Recorder]:
    recorder = Recorder(routes)
    http = httpx.Client(transport=httpx.MockTransport(recorder), base_url="http://gw")
    return Client("http://gw", "ak_test", http_client=http), recorder


def test_auth_header_and_resource_ids():
    """The key goes in a bearer header; full resource names are reduced to ids in paths."""
    client, rec = make_client({("GET", "/v1/datasets/d1"): {"name": "datasets/d1"}})
    assert client.get_dataset("datasets/d1") == {"name": "datasets/d1"}
    assert client.get_dataset("d1")["name"] == "datasets/d1"
    assert rec.requests[0].headers["authorization"] == "Bearer ak_test"


def test_iter_follows_next_page_token():
    """iter_* walks every page and passes page_size and filters."""

    def tasks(request):
        token = request.url.params.get("page_token", "")
        assert request.url.params["state"] == "QUEUED"
        assert request.url.params["page_size"] == "2"
        if token == "":
            return httpx.Response(
                200, json={"tasks": [{"name": "a"}, {"name": "b"}], "next_page_token": "t2"}
            )
        return httpx.Response(200, json={"tasks": [{"name": "c"}], "next_page_token": ""})

    client, rec = make_client({("GET", "/v1/projects/p1/tasks"): tasks})
    names = [t["name"] for t in client.iter_tasks("projects/p1", state="QUEUED", page_size=2)]
    assert names == ["a", "b", "c"]
    assert len(rec.requests) == 2


def test_errors_raise_api_error_with_reason():
    """Gateway errors become ApiError(status_code, reason, message); non-JSON errors too."""
    body = {"error": {"code": 409, "status": "ABORTED", "reason": "ETAG_MISMATCH", "message": "stale"}}
    client, _ = make_client(
        {
            ("PATCH", "/v1/projects/p/annotations/a"): lambda r: httpx.Response(409, json=body),
            ("GET", "/v1/projects"): lambda r: httpx.Response(502, text="bad gateway"),
        }
    )
    with pytest.raises(ApiError) as info:
        client.update_annotation("p", "a", {"classes": ["x"]}, "old")
    assert (info.value.status_code, info.value.reason, info.value.message) == (409, "ETAG_MISMATCH", "stale")
    with pytest.raises(ApiError) as info:
        client.list_projects()
    assert (info.value.status_code, info.value.reason) == (502, "HTTP_ERROR")


def test_upload_item_from_path_and_bytes(tmp_path):
    """Uploads send a multipart file with its name, JSON metadata and request id."""

    def upload(request):
        return httpx.Response(200, json={"item": {"name": "datasets/d/items/i"}, "duplicate": False})

    client, rec = make_client({("POST", "/v1/datasets/d/items:upload"): upload})
    path = tmp_path / "cat.png"
    path.write_bytes(b"\x89PNG data")
    client.upload_item("d", path, metadata={"weather": "rain"}, request_id="u1")
    body = rec.requests[0].content
    assert b'filename="cat.png"' in body
    assert b"\x89PNG data" in body
    assert b'{"weather": "rain"}' in body
    assert b"u1" in body
    client.upload_item("datasets/d", b"raw", file_name="x.txt")
    assert b'filename="x.txt"' in rec.requests[1].content


def test_import_manifest_and_text_items():
    """Manifests go as x-ndjson with request_id in the query; text records as JSON."""
    client, rec = make_client(
        {
            ("POST", "/v1/datasets/d/items:importManifest"): {"items": [], "duplicate_count": 0},
            ("POST", "/v1/datasets/d/items:batchCreateText"): {"items": [], "duplicate_count": 0},
        }
    )
    client.import_manifest("d", '{"text": "a"}\n', request_id="m1")
    assert rec.requests[0].headers["content-type"] == "application/x-ndjson"
    assert rec.requests[0].url.params["request_id"] == "m1"
    client.create_text_items("d", [{"text": "hi"}])
    assert json.loads(rec.requests[1].content) == {"records": [{"text": "hi"}], "request_id": ""}


def test_task_flow_bodies():
    """Lease, submit, reject and export bodies have the gateway's shapes."""
    client, rec = make_client(
        {
            ("POST", "/v1/projects/p/tasks:leaseNext"): {"name": "projects/p/tasks/t"},
            ("POST", "/v1/projects/p/tasks/t:submit"): {"name": "projects/p/annotations/a"},
            ("POST", "/v1/projects/p/reviews/r:reject"): {"name": "projects/p/reviews/r"},
            ("POST", "/v1/projects/p/exports"): {"name": "projects/p/exports/e"},
        }
    )
    client.lease_next_task("p", lease_seconds=60)
    client.submit_task("p", "projects/p/tasks/t", "l1", {"classes": ["cat"]}, request_id="s")
    client.reject_annotation("p", "r", "projects/p/annotations/a", "wrong")
    client.create_export("p", "coco")
    bodies = [json.loads(r.content) for r in rec.requests]
    assert bodies[0] == {"lease_seconds": 60}
    assert bodies[1] == {"lease_id": "l1", "labels": {"classes": ["cat"]}, "request_id": "s"}
    assert bodies[2] == {"annotation": "a", "reason": "wrong"}
    assert bodies[3] == {"format": "COCO", "request_id": ""}


def test_wait_for_export_polls_until_done():
    """wait_for_export returns the job once it is DONE."""
    states = iter(["EXPORT_STATE_PENDING", "EXPORT_STATE_RUNNING", "EXPORT_STATE_DONE"])

    def get(request):
        return httpx.Response(200, json={"name": "projects/p/exports/e", "state": next(states)})

    client, rec = make_client({("GET", "/v1/projects/p/exports/e"): get})
    job = client.wait_for_export("p", "projects/p/exports/e", timeout=5, poll_interval=0.01)
    assert job["state"] == "EXPORT_STATE_DONE"
    assert len(rec.requests) == 3


def test_wait_for_export_times_out():
    """A job that never finishes raises TimeoutError."""
    client, _ = make_client({("GET", "/v1/projects/p/exports/e"): {"state": "EXPORT_STATE_RUNNING"}})
    with pytest.raises(TimeoutError):
        client.wait_for_export("p", "e", timeout=0.05, poll_interval=0.01)


def test_download_export_writes_file(tmp_path):
    """The artifact is streamed to the path; an error leaves no file behind."""
    client, _ = make_client(
        {("GET", "/v1/projects/p/exports/e/artifact"): lambda r: httpx.Response(200, content=b"PK zip bytes")}
    )
    out = client.download_export("p", "e", tmp_path / "out.zip")
    assert out.read_bytes() == b"PK zip bytes"
    with pytest.raises(ApiError) as info:
        client.download_export("p", "missing", tmp_path / "none.zip")
    assert info.value.status_code == 404
    assert not (tmp_path / "none.zip").exists()
