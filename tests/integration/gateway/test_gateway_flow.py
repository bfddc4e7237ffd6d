"""The gateway and the SDK in front of the real five services (in-process, port 0)."""

from __future__ import annotations

import time
import zipfile

import pytest
from annocloud_sdk import ApiError, Client
from annocloud_server.annotations.component import create_component as create_annotations
from annocloud_server.export.component import create_component as create_export
from annocloud_server.gateway.apikeys import ApiKeyStore
from annocloud_server.gateway.app import create_app
from annocloud_server.gateway.settings import GatewaySettings
from annocloud_server.ingestion.component import create_component as create_ingestion
from annocloud_server.qa.component import create_component as create_qa
from annocloud_server.tasks.component import create_component as create_tasks
from fastapi.testclient import TestClient

ALL = [create_ingestion, create_tasks, create_annotations, create_qa, create_export]


@pytest.fixture
def stack(start_services, channel_to, authenticator, tmp_path):
    runtime = start_services(ALL)
    store = ApiKeyStore(tmp_path / "api_keys.json")
    app = create_app(
        GatewaySettings(), channel=channel_to(runtime), authenticator=authenticator, api_keys=store
    )
    clients = []

    def client_for(org: str, subject: str, *roles: str) -> Client:
        key = store.create_key(org, subject, list(roles))
        http = TestClient(app, base_url="http://gw")
        clients.append(http)
        return Client("http://gw", key, http_client=http)

    yield runtime, client_for, app
    for http in clients:
        http.close()


def test_label_and_export_through_the_gateway(stack, tmp_path):
    """Dataset → text items → project → lease/submit → accepted → JSONL export, downloaded as a zip."""
    runtime, client_for, app = stack
    admin = client_for("acme", "key:admin", "admin")
    worker = client_for("acme", "user:ann", "annotator")
    ready = TestClient(app).get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["degraded"] == ["modelassist"]  # not started here: labeling works without it

    dataset = admin.create_dataset("texts", request_id="ds-1")
    assert admin.create_dataset("texts", request_id="ds-1")["name"] == dataset["name"]
    created = admin.create_text_items(dataset["name"], [{"text": "a cat"}, {"text": "a dog"}])
    assert len(created["items"]) == 2
    assert len(list(admin.iter_items(dataset["name"], page_size=1))) == 2

    project = admin.create_project(
        {"display_name": "pets", "redundancy": 1},
        {"classification_mode": "CLASSIFICATION_MODE_SINGLE", "classes": [{"name": "cat"}, {"name": "dog"}]},
        request_id="pr-1",
    )
    admin.add_project_dataset(project["name"], dataset["name"])
    runtime.wait_idle()
    tasks = list(admin.iter_tasks(project["name"], state="QUEUED"))
    assert len(tasks) == 2

    for _ in tasks:
        task = worker.lease_next_task(project["name"], lease_seconds=60)
        label = "cat" if "cat" in task["item_text"] else "dog"
        annotation = worker.submit_task(
            project["name"],
            task["name"],
            task["lease"]["lease_id"],
            {"classes": [label]},
            request_id=task["name"],
        )
        assert annotation["annotator"] == "user:ann"
    runtime.wait_idle()

    deadline = time.monotonic() + 20
    while len(list(admin.iter_accepted_labels(project["name"]))) < 2:
        assert time.monotonic() < deadline, "items were not accepted"
        time.sleep(0.1)
        runtime.wait_idle()

    job = admin.create_export(project["name"], "jsonl", request_id="ex-1")
    job = admin.wait_for_export(project["name"], job["name"], timeout=30, poll_interval=0.1)
    assert job["state"] == "EXPORT_STATE_DONE", job
    path = admin.download_export(project["name"], job["name"], tmp_path / "export.zip")
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist()
    assert path.stat().st_size == job["artifact_size_bytes"]


def test_other_organization_sees_not_found(stack):
    """Another organization's dataset and project are 404 through the gateway."""
    _, client_for, _ = stack
    acme = client_for("acme", "key:admin", "admin")
    globex = client_for("globex", "key:admin", "admin")
    dataset = acme.create_dataset("private")
    with pytest.raises(ApiError) as info:
        globex.get_dataset(dataset["name"])
    assert info.value.status_code == 404
    assert [d["name"] for d in globex.iter_datasets()] == []


def test_bad_input_is_4xx_from_real_services(stack):
    """Real services reject bad input with 400-class errors, never 500."""
    _, client_for, _ = stack
    admin = client_for("acme", "key:admin", "admin")
    with pytest.raises(ApiError) as info:
        admin.create_project({"display_name": "x", "redundancy": 99})
    assert 400 <= info.value.status_code < 500
    with pytest.raises(ApiError) as info:
        admin.list_datasets(page_token="%%%not-a-token")
    assert info.value.status_code == 400
    annotator = client_for("acme", "user:ann", "annotator")
    with pytest.raises(ApiError) as info:
        annotator.create_dataset("nope")
    assert info.value.status_code == 403
