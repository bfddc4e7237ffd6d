"""Export rows to protos and resource names (shared by the servicer and the worker)."""

from __future__ import annotations

from annocloud.export.v1 import export_pb2

from annocloud_server.common.paging import encode_token
from annocloud_server.export.models import DatasetVersion, ExportJob
from annocloud_server.export.store import as_utc


def export_name(project_id: str, export_id: str) -> str:
    return f"projects/{project_id}/exports/{export_id}"


def export_to_proto(job: ExportJob, version_id: str = "") -> export_pb2.Export:
    """``version_id``: the dataset version the job exports, if any."""
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
        dataset_version=version_name(job.project_id, version_id) if version_id else "",
    )
    message.create_time.FromDatetime(as_utc(job.create_time))
    if job.end_time is not None:
        message.end_time.FromDatetime(as_utc(job.end_time))
    return message


def version_name(project_id: str, version_id: str) -> str:
    return f"projects/{project_id}/datasetVersions/{version_id}"


def change_token(project_id: str, seq: int) -> str:
    """The opaque change-feed cursor: every change after ``seq``."""
    return encode_token({"p": project_id, "c": seq})


def version_to_proto(row: DatasetVersion) -> export_pb2.DatasetVersion:
    message = export_pb2.DatasetVersion(
        name=version_name(row.project_id, row.version_id),
        display_name=row.display_name,
        description=row.description,
        item_count=row.item_count,
        annotation_count=row.annotation_count,
        schema_version=row.schema_version,
        label_schema_versions=[int(v) for v in row.label_schema_versions.split(",") if v],
        split=export_pb2.SplitSpec(
            train_fraction=row.train_fraction,
            validation_fraction=row.validation_fraction,
            test_fraction=row.test_fraction,
            seed=row.seed,
        ),
        train_count=row.train_count,
        validation_count=row.validation_count,
        test_count=row.test_count,
        change_cursor=change_token(row.project_id, row.change_seq),
    )
    message.create_time.FromDatetime(as_utc(row.create_time))
    return message


def manifest_key(artifact_key: str) -> str:
    """The sidecar manifest of an artifact (``….zip`` → ``….manifest.json``)."""
    return artifact_key.removesuffix(".zip") + ".manifest.json"
