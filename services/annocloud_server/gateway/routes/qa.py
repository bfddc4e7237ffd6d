"""Reviews and their decisions, gold items, accepted labels, and project, worker and vendor quality."""

from __future__ import annotations

from typing import Annotated, Any

from annocloud.annotations.v1 import annotations_pb2
from annocloud.qa.v1 import qa_pb2
from fastapi import APIRouter, Body, Query

from annocloud_server.gateway.deps import ClientsDep, ItemId, PageSize, PageToken, ProjectId, ReviewId
from annocloud_server.gateway.errors import bad_request
from annocloud_server.gateway.protojson import (
    enum_value,
    parse,
    resource_ref,
    split_body,
    string_field,
    to_dict,
    unwrap,
)

router = APIRouter(tags=["qa"])

ReviewStateQuery = Annotated[
    str | None, Query(description="PENDING (default), APPROVED, REWORK, PASSED or ESCALATED.")
]


@router.get("/projects/{project}/reviews")
def list_reviews(
    clients: ClientsDep,
    project: ProjectId,
    state: ReviewStateQuery = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Lists a project's reviews (pending ones by default)."""
    request = qa_pb2.ListReviewsRequest(
        parent=f"projects/{project}",
        state=enum_value(qa_pb2.ReviewState, state, prefix="REVIEW_STATE_", field="state"),  # type: ignore[arg-type]
        page_size=page_size,
        page_token=page_token,
    )
    return to_dict(clients.read(clients.qa.ListReviews, request))


@router.get("/projects/{project}/reviews/{review}")
def get_review(clients: ClientsDep, project: ProjectId, review: ReviewId) -> dict[str, Any]:
    """Gets a review."""
    request = qa_pb2.GetReviewRequest(name=f"projects/{project}/reviews/{review}")
    return unwrap(clients.read(clients.qa.GetReview, request))


@router.post("/projects/{project}/reviews/{review}:approve")
def approve_review(
    clients: ClientsDep,
    project: ProjectId,
    review: ReviewId,
    body: Annotated[dict[str, Any] | None, Body(examples=[{}, {"labels": {"classes": ["cat"]}}])] = None,
) -> dict[str, Any]:
    """Approves a pending review (optionally with replacement labels); returns the accepted label."""
    fields = split_body(body, {"labels"})
    request = qa_pb2.ApproveReviewRequest(name=f"projects/{project}/reviews/{review}")
    if "labels" in fields and fields["labels"] is not None:
        request.labels.CopyFrom(parse(fields["labels"], annotations_pb2.Labels, what="labels"))
    return unwrap(clients.call(clients.qa.ApproveReview, request))


@router.post("/projects/{project}/reviews/{review}:reject")
def reject_annotation(
    clients: ClientsDep,
    project: ProjectId,
    review: ReviewId,
    body: Annotated[
        dict[str, Any], Body(examples=[{"annotation": "projects/p/annotations/a", "reason": "wrong"}])
    ],
) -> dict[str, Any]:
    """Rejects one annotation of a pending review with a reason; returns the review (now REWORK)."""
    fields = split_body(body, {"annotation", "reason", "reason_code"})
    annotation = string_field(fields, "annotation")
    if not annotation:
        raise bad_request("BAD_REQUEST_BODY", "annotation is required")
    collection = f"projects/{project}/annotations"
    request = qa_pb2.RejectAnnotationRequest(
        review=f"projects/{project}/reviews/{review}",
        annotation=resource_ref(annotation, collection, field="annotation"),
        reason=string_field(fields, "reason"),
        reason_code=string_field(fields, "reason_code"),
    )
    return unwrap(clients.call(clients.qa.RejectAnnotation, request))


@router.post("/projects/{project}/reviews/{review}:escalate")
def escalate_review(
    clients: ClientsDep,
    project: ProjectId,
    review: ReviewId,
    body: Annotated[dict[str, Any], Body(examples=[{"note": "needs a radiologist"}])],
) -> dict[str, Any]:
    """Sends a pending review to an expert reviewer with a note; returns the new expert review."""
    fields = split_body(body, {"note"})
    request = qa_pb2.EscalateReviewRequest(
        name=f"projects/{project}/reviews/{review}", note=string_field(fields, "note")
    )
    return unwrap(clients.call(clients.qa.EscalateReview, request))


@router.post("/projects/{project}/goldItems")
def create_gold_item(
    clients: ClientsDep,
    project: ProjectId,
    body: Annotated[
        dict[str, Any], Body(examples=[{"item": "datasets/d/items/i", "labels": {"classes": ["cat"]}}])
    ],
) -> dict[str, Any]:
    """Adds a gold item with its true labels (project managers only)."""
    fields = split_body(body, {"item", "labels"})
    item = string_field(fields, "item")
    if not item:
        raise bad_request("BAD_REQUEST_BODY", "item is required")
    if fields.get("labels") is None:
        raise bad_request("BAD_REQUEST_BODY", "labels are required")
    request = qa_pb2.CreateGoldItemRequest(
        parent=f"projects/{project}",
        item=item,
        labels=parse(fields["labels"], annotations_pb2.Labels, what="labels"),
    )
    return unwrap(clients.call(clients.qa.CreateGoldItem, request))


@router.get("/projects/{project}/goldItems")
def list_gold_items(
    clients: ClientsDep, project: ProjectId, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    """Lists a project's gold items (project managers only)."""
    request = qa_pb2.ListGoldItemsRequest(
        parent=f"projects/{project}", page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.qa.ListGoldItems, request))


VendorQuery = Annotated[
    str, Query(max_length=200, description="Only this vendor's workers: vendors/{organization}.")
]


@router.get("/projects/{project}/workerQuality")
def list_worker_quality(
    clients: ClientsDep,
    project: ProjectId,
    vendor: VendorQuery = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Quality figures per worker of a project (a vendor admin sees only its own workers)."""
    request = qa_pb2.ListWorkerQualityRequest(
        parent=f"projects/{project}", vendor=vendor, page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.qa.ListWorkerQuality, request))


@router.get("/projects/{project}/vendorQuality")
def list_vendor_quality(clients: ClientsDep, project: ProjectId) -> dict[str, Any]:
    """Quality figures per vendor of a project (a vendor admin sees only itself)."""
    request = qa_pb2.ListVendorQualityRequest(parent=f"projects/{project}")
    return to_dict(clients.read(clients.qa.ListVendorQuality, request))


@router.get("/projects/{project}/acceptedLabels")
def list_accepted_labels(
    clients: ClientsDep, project: ProjectId, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    """Lists a project's accepted labels in acceptance order."""
    request = qa_pb2.ListAcceptedLabelsRequest(
        parent=f"projects/{project}", page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.qa.ListAcceptedLabels, request))


@router.get("/projects/{project}/acceptedLabels/{item}")
def get_accepted_label(clients: ClientsDep, project: ProjectId, item: ItemId) -> dict[str, Any]:
    """Gets the accepted label of an item (by item id)."""
    request = qa_pb2.GetAcceptedLabelRequest(name=f"projects/{project}/acceptedLabels/{item}")
    return unwrap(clients.read(clients.qa.GetAcceptedLabel, request))


@router.get("/projects/{project}/quality")
def get_project_quality(clients: ClientsDep, project: ProjectId) -> dict[str, Any]:
    """Agreement and progress figures of a project."""
    request = qa_pb2.GetProjectQualityRequest(project=f"projects/{project}")
    return to_dict(clients.read(clients.qa.GetProjectQuality, request))
