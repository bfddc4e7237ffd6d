"""Mapping between ingestion rows and protos, and resource names."""

from __future__ import annotations

import json
from typing import Any

from annocloud.common.v1 import common_pb2
from annocloud.ingestion.v1 import ingestion_pb2
from google.protobuf import json_format, struct_pb2

from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.paging import parse_name
from annocloud_server.ingestion.deid import Region
from annocloud_server.ingestion.models import Dataset, ImportJobRow, Item

DATASET_PATTERN = "datasets/{}"
ITEM_PATTERN = "datasets/{}/items/{}"


def dataset_name(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


def item_name(dataset_id: str, item_id: str) -> str:
    return f"datasets/{dataset_id}/items/{item_id}"


def import_name(dataset_id: str, import_id: str) -> str:
    return f"datasets/{dataset_id}/imports/{import_id}"


def parse_import_name(name: str) -> tuple[str, str]:
    dataset_id, import_id = parse_name(name, "datasets/{}/imports/{}")
    return dataset_id, import_id


def parse_dataset_name(name: str) -> str:
    return parse_name(name, DATASET_PATTERN)[0]


def parse_item_name(name: str) -> tuple[str, str]:
    dataset_id, item_id = parse_name(name, ITEM_PATTERN)
    return dataset_id, item_id


def struct_to_dict(struct: struct_pb2.Struct, *, what: str = "metadata") -> dict[str, Any]:
    try:
        value = json_format.MessageToDict(struct)
    except (ValueError, TypeError, json_format.Error) as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}", reason="BAD_METADATA") from exc
    return dict(value)


def dataset_to_proto(dataset: Dataset) -> ingestion_pb2.Dataset:
    message = ingestion_pb2.Dataset(
        name=dataset_name(dataset.id),
        display_name=dataset.display_name,
        description=dataset.description,
        item_count=dataset.item_count,
        deidentify=dataset.deidentify,
    )
    message.create_time.FromDatetime(dataset.create_time)
    return message


def item_to_proto(item: Item) -> ingestion_pb2.Item:
    message = ingestion_pb2.Item(
        name=item_name(item.dataset_id, item.id),
        media_type=item.media_type,  # type: ignore[arg-type]
        file_name=item.file_name,
        content_sha256=item.content_sha256,
        size_bytes=item.size_bytes,
        width=item.width,
        height=item.height,
        text=item.text or "",
        perceptual_hash=item.perceptual_hash,
        near_duplicate_of=item_name(item.dataset_id, item.near_duplicate_of)
        if item.near_duplicate_of
        else "",
        near_duplicate_similarity=item.near_duplicate_similarity,
        source_uri=item.source_uri,
        content_type=item.content_type,
        blurred_regions=item.blurred_regions,
    )
    message.metadata.update(json.loads(item.metadata_json or "{}"))
    message.create_time.FromDatetime(item.create_time)
    return message


def region_from_proto(region: common_pb2.SensitiveRegion) -> Region:
    return Region(
        kind=region.kind,
        x=region.x,
        y=region.y,
        width=region.width,
        height=region.height,
        score=region.score,
        source=region.source,
    )


def region_to_proto(region: Region) -> common_pb2.SensitiveRegion:
    return common_pb2.SensitiveRegion(
        kind=region.kind,  # type: ignore[arg-type]
        x=region.x,
        y=region.y,
        width=region.width,
        height=region.height,
        score=region.score,
        source=region.source,
    )


def import_job_to_proto(job: ImportJobRow) -> ingestion_pb2.ImportJob:
    message = ingestion_pb2.ImportJob(
        name=import_name(job.dataset_id, job.id),
        format=job.format,  # type: ignore[arg-type]
        state=job.state,  # type: ignore[arg-type]
        project=f"projects/{job.project_id}",
        file_name=job.file_name,
        size_bytes=job.size_bytes,
        item_count=job.item_count,
        duplicate_count=job.duplicate_count,
        matched_item_count=job.matched_item_count,
        prediction_count=job.prediction_count,
        error_count=job.error_count,
        errors=[ingestion_pb2.ImportRowError(**e) for e in json.loads(job.errors_json or "[]")],
        failure_reason=job.failure_reason,
        failure_message=job.failure_message,
    )
    message.create_time.FromDatetime(job.create_time)
    if job.end_time is not None:
        message.end_time.FromDatetime(job.end_time)
    return message
