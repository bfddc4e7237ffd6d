"""Export rows to protos and resource names (shared by the servicer and the worker)."""

from __future__ import annotations

from annocloud.export.v1 import export_pb2

from annocloud_server.export.models import ExportJob
from annocloud_server.export.store import as_utc


def export_name(project_id: str, export_id: str) -> str:
    return f"projects/{project_id}/exports/{export_id}"


def export_to_proto(job: ExportJob) -> export_pb2.Export:
    message = export_pb2.Export(
        name=export_name(job.project_id, job.export_id),
        format=job.format,  # type: ignore[arg-type]
        state=job.state,  # type: ignore[arg-type]
        item_count=job.item_count,
        annotation_count=job.annotation_count,
        artifact_size_bytes=job.artifact_size_bytes,
        artifact_sha256=job.artifact_sha256,
        error_reason=job.error_reason,
        error_message=job.error_message,
    )
    message.create_time.FromDatetime(as_utc(job.create_time))
    if job.end_time is not None:
        message.end_time.FromDatetime(as_utc(job.end_time))
    return message
