"""A thin synchronous client over the REST gateway: one method per route, dicts in and out.

Responses are proto JSON with snake_case names, as the gateway returns them. Errors raise
:class:`ApiError` with the gateway's ``reason``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from annocloud_sdk.errors import ApiError

JSON = dict[str, Any]

_TERMINAL_EXPORT_STATES = ("EXPORT_STATE_DONE", "EXPORT_STATE_FAILED")


def _id(name: str) -> str:
    """The last segment of a resource name (``datasets/abc`` → ``abc``); ids pass through."""
    return name.rstrip("/").rsplit("/", 1)[-1]


class Client:
    """annocloud REST client. ``Client("http://127.0.0.1:8080", api_key="ak_...")``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 30,
        *,
        http_client: httpx.Client | None = None,
    ):
        headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "annocloud-sdk/1"}
        if http_client is None:
            self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)
        else:
            self._http = http_client
            self._http.headers.update(headers)
        self._timeout = timeout

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            error = response.json()["error"]
            raise ApiError(
                response.status_code,
                str(error.get("reason", "")),
                str(error.get("message", "")),
                error.get("status", ""),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ApiError(response.status_code, "HTTP_ERROR", response.text[:500]) from None

    def _request(self, method: str, path: str, **kwargs: Any) -> JSON:
        response = self._http.request(method, path, **kwargs)
        self._raise_for(response)
        body: JSON = response.json()
        return body

    def _get(self, path: str, **params: Any) -> JSON:
        return self._request("GET", path, params={k: v for k, v in params.items() if v not in (None, "")})

    def _post(self, path: str, body: Mapping[str, Any] | None = None) -> JSON:
        return self._request("POST", path, json=dict(body) if body is not None else {})

    def _list(self, path: str, page_size: int = 0, page_token: str = "", **params: Any) -> JSON:
        return self._get(path, page_size=page_size or None, page_token=page_token, **params)

    def _iter(self, path: str, field: str, page_size: int = 0, **params: Any) -> Iterator[JSON]:
        token = ""
        while True:
            page = self._list(path, page_size, token, **params)
            yield from page.get(field, [])
            token = page.get("next_page_token", "")
            if not token:
                return

    # -- datasets and items -----------------------------------------------------------------------

    def create_dataset(self, display_name: str, description: str = "", request_id: str = "") -> JSON:
        return self._post(
            "/v1/datasets",
            {"display_name": display_name, "description": description, "request_id": request_id},
        )

    def get_dataset(self, dataset: str) -> JSON:
        return self._get(f"/v1/datasets/{_id(dataset)}")

    def list_datasets(self, page_size: int = 0, page_token: str = "") -> JSON:
        return self._list("/v1/datasets", page_size, page_token)

    def iter_datasets(self, page_size: int = 0) -> Iterator[JSON]:
        return self._iter("/v1/datasets", "datasets", page_size)

    def upload_item(
        self,
        dataset: str,
        path_or_bytes: str | Path | bytes,
        file_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str = "",
    ) -> JSON:
        """Uploads one file (path or bytes); returns {"item": ..., "duplicate": bool}."""
        data: dict[str, str] = {}
        if metadata is not None:
            data["metadata"] = json.dumps(dict(metadata))
        if request_id:
            data["request_id"] = request_id
        url = f"/v1/datasets/{_id(dataset)}/items:upload"
        if isinstance(path_or_bytes, bytes):
            files = {"file": (file_name or "upload.bin", path_or_bytes, "application/octet-stream")}
            return self._request("POST", url, files=files, data=data)
        path = Path(path_or_bytes)
        with path.open("rb") as handle:
            stream: IO[bytes] = handle
            files_io = {"file": (file_name or path.name, stream, "application/octet-stream")}
            return self._request("POST", url, files=files_io, data=data)

    def import_manifest(self, dataset: str, manifest: str | bytes | Path, request_id: str = "") -> JSON:
        """Imports JSONL (text, bytes, or a path to a .jsonl file)."""
        content = Path(manifest).read_bytes() if isinstance(manifest, Path) else manifest
        if isinstance(content, str):
            content = content.encode()
        return self._request(
            "POST",
            f"/v1/datasets/{_id(dataset)}/items:importManifest",
            content=content,
            params={"request_id": request_id} if request_id else None,
            headers={"Content-Type": "application/x-ndjson"},
        )

    def create_text_items(self, dataset: str, records: list[Mapping[str, Any]], request_id: str = "") -> JSON:
        body = {"records": [dict(r) for r in records], "request_id": request_id}
        return self._post(f"/v1/datasets/{_id(dataset)}/items:batchCreateText", body)

    def get_item(self, dataset: str, item: str) -> JSON:
        return self._get(f"/v1/datasets/{_id(dataset)}/items/{_id(item)}")

    def list_items(self, dataset: str, page_size: int = 0, page_token: str = "") -> JSON:
        return self._list(f"/v1/datasets/{_id(dataset)}/items", page_size, page_token)

    def iter_items(self, dataset: str, page_size: int = 0) -> Iterator[JSON]:
        return self._iter(f"/v1/datasets/{_id(dataset)}/items", "items", page_size)

    def get_item_content(self, dataset: str, item: str) -> tuple[bytes, str]:
        """The media bytes and their content type."""
        response = self._http.get(f"/v1/datasets/{_id(dataset)}/items/{_id(item)}/content")
        self._raise_for(response)
        return response.content, response.headers.get("content-type", "application/octet-stream")

    # -- projects and schemas ----------------------------------------------------------------------

    def create_project(
        self, project: Mapping[str, Any], schema: Mapping[str, Any] | None = None, request_id: str = ""
    ) -> JSON:
        body: JSON = {"project": dict(project), "request_id": request_id}
        if schema is not None:
            body["schema"] = dict(schema)
        return self._post("/v1/projects", body)

    def get_project(self, project: str) -> JSON:
        return self._get(f"/v1/projects/{_id(project)}")

    def list_projects(self, page_size: int = 0, page_token: str = "") -> JSON:
        return self._list("/v1/projects", page_size, page_token)

    def iter_projects(self, page_size: int = 0) -> Iterator[JSON]:
        return self._iter("/v1/projects", "projects", page_size)

    def add_project_dataset(self, project: str, dataset: str) -> JSON:
        return self._post(f"/v1/projects/{_id(project)}:addDataset", {"dataset": f"datasets/{_id(dataset)}"})

    def create_label_schema(self, project: str, schema: Mapping[str, Any]) -> JSON:
        return self._post(f"/v1/projects/{_id(project)}/schemas", {"schema": dict(schema)})

    def get_label_schema(self, project: str, version: int | str = "latest") -> JSON:
        return self._get(f"/v1/projects/{_id(project)}/schemas/{version}")

    def list_label_schemas(self, project: str, page_size: int = 0, page_token: str = "") -> JSON:
        return self._list(f"/v1/projects/{_id(project)}/schemas", page_size, page_token)

    # -- tasks -------------------------------------------------------------------------------------

    def list_tasks(
        self, project: str, state: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> JSON:
        return self._list(f"/v1/projects/{_id(project)}/tasks", page_size, page_token, state=state)

    def iter_tasks(self, project: str, state: str | None = None, page_size: int = 0) -> Iterator[JSON]:
        return self._iter(f"/v1/projects/{_id(project)}/tasks", "tasks", page_size, state=state)

    def get_task(self, project: str, task: str) -> JSON:
        return self._get(f"/v1/projects/{_id(project)}/tasks/{_id(task)}")

    def lease_next_task(self, project: str, lease_seconds: int | None = None) -> JSON:
        body = {"lease_seconds": lease_seconds} if lease_seconds is not None else {}
        return self._post(f"/v1/projects/{_id(project)}/tasks:leaseNext", body)

    def heartbeat_lease(
        self, project: str, task: str, lease_id: str, lease_seconds: int | None = None
    ) -> JSON:
        body: JSON = {"lease_id": lease_id}
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        return self._post(f"/v1/projects/{_id(project)}/tasks/{_id(task)}:heartbeat", body)

    def release_task(self, project: str, task: str, lease_id: str) -> JSON:
        return self._post(f"/v1/projects/{_id(project)}/tasks/{_id(task)}:release", {"lease_id": lease_id})

    def submit_task(
        self, project: str, task: str, lease_id: str, labels: Mapping[str, Any], request_id: str = ""
    ) -> JSON:
        """Submits a leased task's labels; returns the annotation."""
        body = {"lease_id": lease_id, "labels": dict(labels), "request_id": request_id}
        return self._post(f"/v1/projects/{_id(project)}/tasks/{_id(task)}:submit", body)

    # -- annotations and predictions ---------------------------------------------------------------

    def list_annotations(
        self, project: str, item: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> JSON:
        return self._list(f"/v1/projects/{_id(project)}/annotations", page_size, page_token, item=item)

    def iter_annotations(self, project: str, item: str | None = None, page_size: int = 0) -> Iterator[JSON]:
        return self._iter(f"/v1/projects/{_id(project)}/annotations", "annotations", page_size, item=item)

    def get_annotation(self, project: str, annotation: str) -> JSON:
        return self._get(f"/v1/projects/{_id(project)}/annotations/{_id(annotation)}")

    def update_annotation(self, project: str, annotation: str, labels: Mapping[str, Any], etag: str) -> JSON:
        return self._request(
            "PATCH",
            f"/v1/projects/{_id(project)}/annotations/{_id(annotation)}",
            json={"labels": dict(labels), "etag": etag},
        )

    def list_annotation_revisions(
        self, project: str, annotation: str, page_size: int = 0, page_token: str = ""
    ) -> JSON:
        path = f"/v1/projects/{_id(project)}/annotations/{_id(annotation)}/revisions"
        return self._list(path, page_size, page_token)

    def create_prediction(self, project: str, prediction: Mapping[str, Any], request_id: str = "") -> JSON:
        body = {"prediction": dict(prediction), "request_id": request_id}
        return self._post(f"/v1/projects/{_id(project)}/predictions", body)

    def list_predictions(
        self, project: str, item: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> JSON:
        return self._list(f"/v1/projects/{_id(project)}/predictions", page_size, page_token, item=item)

    def iter_predictions(self, project: str, item: str | None = None, page_size: int = 0) -> Iterator[JSON]:
        return self._iter(f"/v1/projects/{_id(project)}/predictions", "predictions", page_size, item=item)

    # -- qa ----------------------------------------------------------------------------------------

    def list_reviews(
        self, project: str, state: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> JSON:
        return self._list(f"/v1/projects/{_id(project)}/reviews", page_size, page_token, state=state)

    def iter_reviews(self, project: str, state: str | None = None, page_size: int = 0) -> Iterator[JSON]:
        return self._iter(f"/v1/projects/{_id(project)}/reviews", "reviews", page_size, state=state)

    def get_review(self, project: str, review: str) -> JSON:
        return self._get(f"/v1/projects/{_id(project)}/reviews/{_id(review)}")

    def approve_review(self, project: str, review: str, labels: Mapping[str, Any] | None = None) -> JSON:
        body = {"labels": dict(labels)} if labels is not None else {}
        return self._post(f"/v1/projects/{_id(project)}/reviews/{_id(review)}:approve", body)

    def reject_annotation(self, project: str, review: str, annotation: str, reason: str) -> JSON:
        body = {"annotation": _id(annotation), "reason": reason}
        return self._post(f"/v1/projects/{_id(project)}/reviews/{_id(review)}:reject", body)

    def list_accepted_labels(self, project: str, page_size: int = 0, page_token: str = "") -> JSON:
        return self._list(f"/v1/projects/{_id(project)}/acceptedLabels", page_size, page_token)

    def iter_accepted_labels(self, project: str, page_size: int = 0) -> Iterator[JSON]:
        return self._iter(f"/v1/projects/{_id(project)}/acceptedLabels", "accepted_labels", page_size)

    def get_accepted_label(self, project: str, item: str) -> JSON:
        return self._get(f"/v1/projects/{_id(project)}/acceptedLabels/{_id(item)}")

    def get_project_quality(self, project: str) -> JSON:
        return self._get(f"/v1/projects/{_id(project)}/quality")

    # -- exports -----------------------------------------------------------------------------------

    def create_export(
        self, project: str, format: str = "COCO", request_id: str = "", dataset_version: str = ""
    ) -> JSON:
        """Starts an export of the current accepted labels, or of ``dataset_version`` (name or id)."""
        body = {"format": format.upper(), "request_id": request_id}
        if dataset_version:
            body["dataset_version"] = _id(dataset_version)
        return self._post(f"/v1/projects/{_id(project)}/exports", body)

    def get_export(self, project: str, export: str) -> JSON:
        return self._get(f"/v1/projects/{_id(project)}/exports/{_id(export)}")

    def list_exports(self, project: str, page_size: int = 0, page_token: str = "") -> JSON:
        return self._list(f"/v1/projects/{_id(project)}/exports", page_size, page_token)

    def iter_exports(self, project: str, page_size: int = 0) -> Iterator[JSON]:
        return self._iter(f"/v1/projects/{_id(project)}/exports", "exports", page_size)

    def wait_for_export(
        self, project: str, export: str, timeout: float = 300, poll_interval: float = 0.5
    ) -> JSON:
        """Polls until the export is DONE or FAILED; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_export(project, export)
            if job.get("state") in _TERMINAL_EXPORT_STATES:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"export {export} still {job.get('state')} after {timeout} s")
            time.sleep(min(poll_interval, max(deadline - time.monotonic(), 0.0)))

    def download_export(self, project: str, export: str, path: str | Path) -> Path:
        """Streams the artifact zip to ``path`` (written to a temp name, then renamed)."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        url = f"/v1/projects/{_id(project)}/exports/{_id(export)}/artifact"
        with self._http.stream("GET", url) as response:
            if not response.is_success:
                response.read()
                self._raise_for(response)
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        partial.replace(target)
        return target

    def get_export_manifest(self, project: str, export: str) -> JSON:
        """The sidecar manifest: the zip's sha256 and size and every file's."""
        return self._get(f"/v1/projects/{_id(project)}/exports/{_id(export)}/manifest")

    # -- dataset versions and the change feed ------------------------------------------------------

    def create_dataset_version(
        self,
        project: str,
        display_name: str = "",
        description: str = "",
        *,
        train: float = 0.0,
        validation: float = 0.0,
        test: float = 0.0,
        seed: int = 0,
        request_id: str = "",
    ) -> JSON:
        """Snapshots the accepted labels (synchronous). Fractions all 0 mean 0.8 / 0.1 / 0.1."""
        body: JSON = {"display_name": display_name, "description": description, "request_id": request_id}
        split = {
            "train_fraction": train,
            "validation_fraction": validation,
            "test_fraction": test,
            "seed": seed,
        }
        body["split"] = {k: v for k, v in split.items() if v}
        return self._post(f"/v1/projects/{_id(project)}/datasetVersions", body)

    def get_dataset_version(self, project: str, version: str) -> JSON:
        return self._get(f"/v1/projects/{_id(project)}/datasetVersions/{_id(version)}")

    def list_dataset_versions(self, project: str, page_size: int = 0, page_token: str = "") -> JSON:
        return self._list(f"/v1/projects/{_id(project)}/datasetVersions", page_size, page_token)

    def iter_dataset_versions(self, project: str, page_size: int = 0) -> Iterator[JSON]:
        return self._iter(f"/v1/projects/{_id(project)}/datasetVersions", "dataset_versions", page_size)

    def iter_dataset_version_items(
        self, project: str, version: str, split: str | None = None, page_size: int = 0
    ) -> Iterator[JSON]:
        """Every item of a version (``split``: train / validation / test), in item order."""
        path = f"/v1/projects/{_id(project)}/datasetVersions/{_id(version)}/items"
        return self._iter(path, "items", page_size, split=split)

    def iter_dataset_version_diff(
        self, project: str, version: str, base: str, page_size: int = 0
    ) -> Iterator[JSON]:
        """Entries {item, kind ADDED/REMOVED/CHANGED, before, after} from ``base`` to ``version``."""
        path = f"/v1/projects/{_id(project)}/datasetVersions/{_id(version)}:diff"
        return self._iter(path, "entries", page_size, base=_id(base))

    def list_changes(
        self, project: str, since_version: str = "", page_size: int = 0, page_token: str = ""
    ) -> JSON:
        """One page of the change feed; keep ``resume_token`` to continue later."""
        since = _id(since_version) if since_version and not page_token else None
        return self._list(f"/v1/projects/{_id(project)}/changes", page_size, page_token, since_version=since)

    def iter_changes(
        self, project: str, since_version: str = "", cursor: str = "", page_size: int = 0
    ) -> Iterator[JSON]:
        """Every change after ``cursor`` (or ``since_version``, or the start) up to now, each once."""
        token = cursor
        while True:
            page = self.list_changes(project, since_version, page_size, token)
            yield from page.get("changes", [])
            token = page.get("next_page_token", "")
            if not token:
                return

    # -- health ------------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when every service is serving."""
        return self._http.get("/readyz").status_code == 200
