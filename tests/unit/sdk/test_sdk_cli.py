"""The annocloud CLI: argument parsing, key creation, client commands and error exits."""

from __future__ import annotations

import io
import json
import sys
import types

import httpx
import pytest
from annocloud_sdk import Client
from annocloud_server.cli import build_parser, main
from annocloud_server.gateway.apikeys import ApiKeyStore


def run(argv, routes=None, env_key="ak_env"):
    """Runs main() with a mock gateway; returns (code, stdout, stderr, requests)."""
    seen: list[httpx.Request] = []

    def handler(request):
        seen.append(request)
        answer = (routes or {}).get((request.method, request.url.path))
        if answer is None:
            body = {
                "error": {
                    "code": 404,
                    "status": "NOT_FOUND",
                    "reason": "PROJECT_NOT_FOUND",
                    "message": "nope",
                }
            }
            return httpx.Response(404, json=body)
        return answer(request) if callable(answer) else httpx.Response(200, json=answer)

    def factory(url, key):
        http = httpx.Client(transport=httpx.MockTransport(handler), base_url=url)
        return Client(url, key, http_client=http)

    out, err = io.StringIO(), io.StringIO()
    code = main(argv, client_factory=factory, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue(), seen


def test_serve_defaults_and_lazy_embedded_call(monkeypatch):
    """serve parses its defaults and calls annocloud_server.embedded.serve with keywords."""
    calls = []
    fake = types.ModuleType("annocloud_server.embedded")
    fake.serve = lambda **kw: calls.append(kw)
    monkeypatch.setitem(sys.modules, "annocloud_server.embedded", fake)
    assert main(["serve", "--demo", "--port", "9000"]) == 0
    assert calls[0]["port"] == 9000
    assert calls[0]["grpc_port"] == 50051
    assert calls[0]["host"] == "127.0.0.1"
    assert calls[0]["demo"] is True
    assert str(calls[0]["data_dir"]) == "data"


def test_keys_create_prints_a_working_key(tmp_path):
    """keys create writes a hashed key with every role given and prints the plaintext."""
    out = io.StringIO()
    argv = ["keys", "create", "--data-dir", str(tmp_path), "--org", "acme", "--subject", "key:bot"]
    code = main([*argv, "--role", "admin", "reviewer", "--role", "annotator"], stdout=out)
    assert code == 0
    key = out.getvalue().strip()
    principal = ApiKeyStore(tmp_path).lookup(key)
    assert principal is not None
    assert principal.organization_id == "acme"
    assert len(principal.roles) == 3


def test_keys_create_bad_org_exits_1(tmp_path):
    """An invalid organization id is an error on stderr with exit code 1."""
    err = io.StringIO()
    code = main(
        [
            "keys",
            "create",
            "--data-dir",
            str(tmp_path),
            "--org",
            "Bad Org",
            "--subject",
            "s",
            "--role",
            "admin",
        ],
        stderr=err,
    )
    assert code == 1
    assert "organization id" in err.getvalue()


def test_parser_rejects_unknown_role_and_format():
    """argparse refuses roles and formats outside the choices (exit code 2)."""
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(
            ["keys", "create", "--data-dir", "d", "--org", "a", "--subject", "s", "--role", "god"]
        )
    with pytest.raises(SystemExit):
        parser.parse_args(["exports", "create", "p", "--format", "bmp"])


def test_client_options_from_env(monkeypatch):
    """--url and --api-key default to ANNOCLOUD_URL and ANNOCLOUD_API_KEY."""
    monkeypatch.setenv("ANNOCLOUD_URL", "http://gw:1")
    monkeypatch.setenv("ANNOCLOUD_API_KEY", "ak_x")
    args = build_parser().parse_args(["projects", "list"])
    assert (args.url, args.api_key) == ("http://gw:1", "ak_x")


def test_missing_api_key_exits_1(monkeypatch):
    """Client commands need a key."""
    monkeypatch.delenv("ANNOCLOUD_API_KEY", raising=False)
    code, _, err, seen = run(["datasets", "list", "--url", "http://gw"])
    assert code == 1
    assert "API key" in err
    assert seen == []


def test_datasets_list_prints_all_pages_as_json():
    """datasets list follows pages and prints one JSON array."""

    def page(request):
        if request.url.params.get("page_token"):
            return httpx.Response(200, json={"datasets": [{"name": "datasets/b"}], "next_page_token": ""})
        return httpx.Response(200, json={"datasets": [{"name": "datasets/a"}], "next_page_token": "n"})

    code, out, _, _ = run(["datasets", "list", "--api-key", "ak_1"], {("GET", "/v1/datasets"): page})
    assert code == 0
    assert [d["name"] for d in json.loads(out)] == ["datasets/a", "datasets/b"]


def test_items_upload_many_files(tmp_path):
    """items upload sends each file and prints the results."""
    files = []
    for name in ("a.txt", "b.txt"):
        path = tmp_path / name
        path.write_text(name)
        files.append(str(path))
    answer = {"item": {"name": "datasets/d/items/i"}, "duplicate": False}
    code, out, err, seen = run(
        ["items", "upload", "d", *files, "--api-key", "k", "--metadata", '{"k": 1}'],
        {("POST", "/v1/datasets/d/items:upload"): answer},
    )
    assert code == 0, err
    assert len(json.loads(out)) == 2
    assert len(seen) == 2


def test_projects_create_from_file(tmp_path):
    """projects create reads {"project", "schema"} from the file."""
    spec = tmp_path / "project.json"
    spec.write_text(json.dumps({"project": {"display_name": "cats"}, "schema": {"allow_not_sure": True}}))
    code, out, _, seen = run(
        ["projects", "create", "--file", str(spec), "--api-key", "k", "--request-id", "r1"],
        {("POST", "/v1/projects"): {"name": "projects/p1"}},
    )
    assert code == 0
    assert json.loads(out)["name"] == "projects/p1"
    assert json.loads(seen[0].content) == {
        "project": {"display_name": "cats"},
        "schema": {"allow_not_sure": True},
        "request_id": "r1",
    }


def test_projects_create_bad_file_exits_1(tmp_path):
    """A file that is not JSON is a clean error."""
    spec = tmp_path / "project.json"
    spec.write_text("{nope")
    code, _, err, seen = run(["projects", "create", "--file", str(spec), "--api-key", "k"])
    assert code == 1
    assert "not valid JSON" in err
    assert seen == []


def test_api_error_goes_to_stderr_with_exit_1():
    """An API error prints status and reason to stderr and exits 1."""
    code, out, err, _ = run(["projects", "get", "missing", "--api-key", "k"])
    assert code == 1
    assert out == ""
    assert "404 PROJECT_NOT_FOUND" in err


def test_tasks_list_and_exports(tmp_path):
    """tasks list passes the state; exports create/get/download map to the routes."""
    routes = {
        ("GET", "/v1/projects/p/tasks"): {"tasks": [{"name": "t"}], "next_page_token": ""},
        ("POST", "/v1/projects/p/exports"): {"name": "projects/p/exports/e", "state": "EXPORT_STATE_PENDING"},
        ("GET", "/v1/projects/p/exports/e"): {"name": "projects/p/exports/e", "state": "EXPORT_STATE_DONE"},
        ("GET", "/v1/projects/p/exports/e/artifact"): lambda r: httpx.Response(200, content=b"PKzip"),
    }
    code, out, _, seen = run(["tasks", "list", "p", "--state", "queued", "--api-key", "k"], routes)
    assert code == 0
    assert seen[0].url.params["state"] == "queued"
    code, out, _, seen = run(
        ["exports", "create", "p", "--format", "COCO", "--wait", "--api-key", "k"], routes
    )
    assert code == 0
    assert json.loads(seen[0].content)["format"] == "COCO"
    assert json.loads(out)["state"] == "EXPORT_STATE_DONE"
    target = tmp_path / "out.zip"
    code, out, _, _ = run(["exports", "download", "p", "e", "-o", str(target), "--api-key", "k"], routes)
    assert code == 0
    assert target.read_bytes() == b"PKzip"
    assert json.loads(out)["size_bytes"] == 5
