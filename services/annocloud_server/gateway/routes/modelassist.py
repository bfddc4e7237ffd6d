"""Model-assisted labeling: a project's model and active-learning state, rescoring, and how much of
each model's suggestions survived the human edit."""

from __future__ import annotations

from typing import Any

from annocloud.modelassist.v1 import modelassist_pb2 as mpb
from fastapi import APIRouter

from annocloud_server.gateway.deps import ClientsDep, ProjectId
from annocloud_server.gateway.protojson import to_dict, unwrap

router = APIRouter(tags=["modelassist"])


@router.get("/projects/{project}/model")
def get_project_model(clients: ClientsDep, project: ProjectId) -> dict[str, Any]:
    """The project's head: strategy, version, what it was trained on, items embedded and scored."""
    request = mpb.GetProjectModelRequest(project=f"projects/{project}")
    return unwrap(clients.read(clients.modelassist.GetProjectModel, request))


@router.post("/projects/{project}/model:rescore")
def rescore_project(clients: ClientsDep, project: ProjectId) -> dict[str, Any]:
    """Retrains the head now and reorders the queue (or applies the cold start before any head)."""
    request = mpb.RescoreProjectRequest(project=f"projects/{project}")
    return unwrap(clients.call(clients.modelassist.RescoreProject, request))


@router.get("/projects/{project}/suggestionStats")
def list_suggestion_stats(clients: ClientsDep, project: ProjectId) -> dict[str, Any]:
    """Per model version: boxes suggested, kept unchanged, adjusted, deleted, added; per annotator too."""
    request = mpb.ListSuggestionStatsRequest(project=f"projects/{project}")
    return to_dict(clients.read(clients.modelassist.ListSuggestionStats, request))
