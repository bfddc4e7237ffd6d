"""The tasks service as import jobs need it: a project of the caller's organization and its current schema.

Built on the annotations service's client (same lazy channel, deadline, error translation and cache of
immutable schema versions); it only adds GetProject, whose answer names the current schema version.
"""

from __future__ import annotations

import grpc
from annocloud.tasks.v1 import tasks_pb2

from annocloud_server.annotations import tasks_client as shared
from annocloud_server.common.paging import parse_name

Metadata = shared.Metadata
forwarded_metadata = shared.forwarded_metadata


class TasksClient(shared.TasksClient):
    """Reads projects and label schemas as the caller (their signed principal, a deadline per call)."""

    def current_schema(
        self, project: str, *, organization_id: str, metadata: Metadata
    ) -> tasks_pb2.LabelSchema:
        """The current label schema of ``project`` (``projects/{project}``).

        NOT_FOUND when the caller's organization has no such project (another organization's
        project included); UNAVAILABLE when the tasks service does not answer in time."""
        (project_id,) = parse_name(project, "projects/{}")
        try:
            response = self._stub.GetProject(
                tasks_pb2.GetProjectRequest(name=project), metadata=metadata, timeout=shared.TIMEOUT_SECONDS
            )
        except grpc.RpcError as error:
            raise shared._translate(error, f"project {project}") from None
        return self.get_schema(
            organization_id=organization_id,
            project_id=project_id,
            version=response.project.schema_version,
            metadata=metadata,
        )
