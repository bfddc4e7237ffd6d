"""Datasets: create, list, get."""

from __future__ import annotations

from typing import Annotated, Any

from annocloud.ingestion.v1 import ingestion_pb2
from fastapi import APIRouter, Body

from annocloud_server.gateway.deps import ClientsDep, DatasetId, PageSize, PageToken
from annocloud_server.gateway.protojson import parse, string_field, to_dict, unwrap

router = APIRouter(tags=["datasets"])


@router.post("/datasets", status_code=200)
def create_dataset(
    clients: ClientsDep,
    body: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {"display_name": "street scenes", "description": "", "deidentify": True, "request_id": "r-1"}
            ]
        ),
    ],
) -> dict[str, Any]:
    """Creates a dataset (a Dataset plus an optional request_id for idempotent retries); with
    ``deidentify`` its images are stored with faces and plates blurred."""
    fields = dict(body)
    request_id = string_field(fields, "request_id")
    fields.pop("request_id", None)
    if isinstance(fields.get("dataset"), dict) and len(fields) == 1:
        fields = fields["dataset"]
    dataset = parse(fields, ingestion_pb2.Dataset)
    request = ingestion_pb2.CreateDatasetRequest(dataset=dataset, request_id=request_id)
    return unwrap(clients.call(clients.ingestion.CreateDataset, request))


@router.get("/datasets")
def list_datasets(clients: ClientsDep, page_size: PageSize = 0, page_token: PageToken = "") -> dict[str, Any]:
    """Lists the caller's datasets, newest first."""
    request = ingestion_pb2.ListDatasetsRequest(page_size=page_size, page_token=page_token)
    return to_dict(clients.read(clients.ingestion.ListDatasets, request))


@router.get("/datasets/{dataset}")
def get_dataset(clients: ClientsDep, dataset: DatasetId) -> dict[str, Any]:
    """Gets a dataset."""
    request = ingestion_pb2.GetDatasetRequest(name=f"datasets/{dataset}")
    return unwrap(clients.read(clients.ingestion.GetDataset, request))
