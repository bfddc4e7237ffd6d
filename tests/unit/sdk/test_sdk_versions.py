"""SDK and CLI for dataset versions, diffs, the change feed and version exports, against a mock gateway."""

from __future__ import annotations

import io
import json

import httpx
from annocloud_sdk import Client
from annocloud_server.cli import main


def mock(routes, seen):  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = routes[(request.method, request.url.path)]
        return answer(request) if callable(answer) else httpx.Response(200, json=answer)

    return handler


def test_sdk_version_methods_use_the_gateway_routes() -> None:
    """create/items/diff/changes/export hit the documented paths with ids, split fractions and filters."""
    seen: list[httpx.Request] = []
    base = "/v1/projects/p1/datasetVersions"

    def changes(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page_token") == "t2":
            return httpx.Response(
                200, json={"changes": [{"item": "b"}], "next_page_token": "", "resume_token": "t3"}
            )
        return httpx.Response(
            200, json={"changes": [{"item": "a"}], "next_page_token": "t2", "resume_token": "t2"}
        )

    routes = {
        ("POST", base): {"name": "projects/p1/datasetVersions/v1"},
        ("GET", f"{base}/v1/items"): {"items": [{"item": "x", "split": "SPLIT_TEST"}]},
        ("GET", f"{base}/v2:diff"): {"entries": [{"item": "x", "kind": "CHANGE_KIND_ADDED"}]},
        ("GET", "/v1/projects/p1/changes"): changes,
        ("POST", "/v1/projects/p1/exports"): {"name": "projects/p1/exports/e1"},
    }
    http = httpx.Client(transport=httpx.MockTransport(mock(routes, seen)), base_url="http://gw")
    client = Client("http://gw", "ak", http_client=http)
    client.create_dataset_version("projects/p1", "v", train=0.6, validation=0.2, test=0.2, seed=4)
    assert json.loads(seen[-1].content)["split"] == {
        "train_fraction": 0.6,
        "validation_fraction": 0.2,
        "test_fraction": 0.2,
        "seed": 4,
    }
    assert list(client.iter_dataset_version_items("p1", "projects/p1/datasetVersions/v1", split="test")) == [
        {"item": "x", "split": "SPLIT_TEST"}
    ]
    assert seen[-1].url.params["split"] == "test"
    assert [
        e["kind"] for e in client.iter_dataset_version_diff("p1", "v2", base="projects/p1/datasetVersions/v1")
    ] == ["CHANGE_KIND_ADDED"]
    assert seen[-1].url.params["base"] == "v1"
    assert [c["item"] for c in client.iter_changes("p1", since_version="v1")] == ["a", "b"]
    assert seen[-2].url.params["since_version"] == "v1"
    assert "since_version" not in seen[-1].url.params
    client.create_export("p1", "yolo", dataset_version="projects/p1/datasetVersions/v1")
    assert json.loads(seen[-1].content) == {"format": "YOLO", "request_id": "", "dataset_version": "v1"}


def test_cli_versions_create_parses_the_split_and_rejects_garbage() -> None:
    """`versions create --split a,b,c --seed` sends the fractions; a malformed --split exits 1 with a message."""
    seen: list[httpx.Request] = []
    routes = {("POST", "/v1/projects/p1/datasetVersions"): {"name": "projects/p1/datasetVersions/v1"}}

    def factory(url: str, key: str) -> Client:
        return Client(
            url,
            key,
            http_client=httpx.Client(transport=httpx.MockTransport(mock(routes, seen)), base_url=url),
        )

    out, err = io.StringIO(), io.StringIO()
    argv = ["versions", "create", "p1", "--split", "0.7,0.2,0.1", "--seed", "9", "--api-key", "ak"]
    assert main(argv, client_factory=factory, stdout=out, stderr=err) == 0
    assert json.loads(out.getvalue())["name"] == "projects/p1/datasetVersions/v1"
    assert json.loads(seen[0].content)["split"]["seed"] == 9
    bad = ["versions", "create", "p1", "--split", "most", "--api-key", "ak"]
    assert main(bad, client_factory=factory, stdout=io.StringIO(), stderr=err) == 1
    assert "--split" in err.getvalue()
