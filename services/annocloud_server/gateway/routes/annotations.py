"""Annotations (with revisions) and model predictions of a project."""

from __future__ import annotations

from typing import Annotated, Any

from annocloud.annotations.v1 import annotations_pb2
from fastapi import APIRouter, Body, Query

from annocloud_server.gateway.deps import AnnotationId, ClientsDep, PageSize, PageToken, ProjectId
from annocloud_server.gateway.protojson import item_name, parse, split_body, string_field, to_dict, unwrap

router = APIRouter(tags=["annotations"])

ItemQuery = Annotated[str | None, Query(description="Only this item: 'datasets/{d}/items/{i}'.")]


def _item_filter(item: str | None) -> str:
    return item_name(item)


@router.get("/projects/{project}/annotations")
def list_annotations(
    clients: ClientsDep,
    project: ProjectId,
    item: ItemQuery = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Lists a project's annotations (latest revisions), optionally of one item."""
    request = annotations_pb2.ListAnnotationsRequest(
        parent=f"projects/{project}", item=_item_filter(item), page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.annotations.ListAnnotations, request))


@router.get("/projects/{project}/annotations/{annotation}")
def get_annotation(clients: ClientsDep, project: ProjectId, annotation: AnnotationId) -> dict[str, Any]:
    """Gets the latest revision of an annotation."""
    request = annotations_pb2.GetAnnotationRequest(name=f"projects/{project}/annotations/{annotation}")
    return unwrap(clients.read(clients.annotations.GetAnnotation, request))


@router.patch("/projects/{project}/annotations/{annotation}")
def update_annotation(
    clients: ClientsDep,
    project: ProjectId,
    annotation: AnnotationId,
    body: Annotated[dict[str, Any], Body(examples=[{"labels": {"classes": ["dog"]}, "etag": "..."}])],
) -> dict[str, Any]:
    """Edits an annotation (a new revision); 409 ABORTED when the etag is stale."""
    request = parse(split_body(body, {"labels", "etag"}), annotations_pb2.UpdateAnnotationRequest)
    request.name = f"projects/{project}/annotations/{annotation}"
    return unwrap(clients.call(clients.annotations.UpdateAnnotation, request))


@router.get("/projects/{project}/annotations/{annotation}/revisions")
def list_annotation_revisions(
    clients: ClientsDep,
    project: ProjectId,
    annotation: AnnotationId,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Lists every revision of an annotation, oldest first."""
    request = annotations_pb2.ListAnnotationRevisionsRequest(
        name=f"projects/{project}/annotations/{annotation}", page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.annotations.ListAnnotationRevisions, request))


@router.post("/projects/{project}/predictions")
def create_prediction(
    clients: ClientsDep,
    project: ProjectId,
    body: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {
                    "prediction": {
                        "item": "datasets/d/items/i",
                        "model": "detector",
                        "model_version": "3",
                        "score": 0.8,
                        "labels": {"classes": ["cat"]},
                    },
                    "request_id": "r-1",
                }
            ]
        ),
    ],
) -> dict[str, Any]:
    """Stores a model prediction: {"prediction": Prediction, "request_id"} (or the fields inline)."""
    fields = dict(body)
    request_id = string_field(fields, "request_id")
    fields.pop("request_id", None)
    if isinstance(fields.get("prediction"), dict) and len(fields) == 1:
        fields = fields["prediction"]
    prediction = parse(fields, annotations_pb2.Prediction)
    request = annotations_pb2.CreatePredictionRequest(
        parent=f"projects/{project}", prediction=prediction, request_id=request_id
    )
    return unwrap(clients.call(clients.annotations.CreatePrediction, request))


@router.get("/projects/{project}/predictions")
def list_predictions(
    clients: ClientsDep,
    project: ProjectId,
    item: ItemQuery = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Lists a project's predictions, optionally of one item."""
    request = annotations_pb2.ListPredictionsRequest(
        parent=f"projects/{project}", item=_item_filter(item), page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.annotations.ListPredictions, request))
