"""QaService end to end on the bus: votes in, ItemAccepted / reviews / rework out, and the RPCs."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from annocloud.annotations.v1 import annotations_pb2 as apb
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.qa.v1 import qa_pb2, qa_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.auth import ANNOTATOR, REVIEWER
from annocloud_server.common.events import TOPIC_ANNOTATIONS, TOPIC_QA, TOPIC_TASKS, OutgoingRecord
from annocloud_server.common.paging import new_id
from annocloud_server.qa.component import create_component
from annocloud_server.runtime import Runtime

SCHEMA = tasks_pb2.LabelSchema(
    name="projects/p1/schemas/1",
    version=1,
    classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
    classes=[tasks_pb2.ClassLabel(name="cat"), tasks_pb2.ClassLabel(name="dog")],
    objects=[tasks_pb2.ObjectLabel(name="car", kind=tasks_pb2.OBJECT_KIND_BOX)],
)


def envelope(org: str, resource: str, **payload: object) -> events_pb2.EventEnvelope:
    env = events_pb2.EventEnvelope(event_id=new_id(), tenant_id=org, resource_name=resource, **payload)  # type: ignore[arg-type]
    env.event_type = getattr(env, env.WhichOneof("payload") or "").DESCRIPTOR.full_name
    return env


def publish(runtime: Runtime, topic: str, *envelopes: events_pb2.EventEnvelope) -> None:
    runtime.bus.publish([OutgoingRecord(topic, e.resource_name, e.SerializeToString()) for e in envelopes])
    runtime.wait_idle()


def project_created(
    org: str,
    policy: int = tasks_pb2.REVIEW_POLICY_DISAGREEMENT,
    min_agreement: float = 0.5,
    redundancy: int = 3,
) -> events_pb2.EventEnvelope:
    project = tasks_pb2.Project(
        name="projects/p1",
        redundancy=redundancy,
        review_policy=policy,  # type: ignore[arg-type]
        min_agreement=min_agreement,
    )
    return envelope(
        org, "projects/p1", project_created=events_pb2.ProjectCreated(project=project, schema=SCHEMA)
    )


def vote(
    org: str,
    n: int,
    cls: str,
    item: str = "datasets/d1/items/i1",
    rework_of: str = "",
    box: tuple[float, float] | None = None,
    redundancy: int = 3,
) -> events_pb2.EventEnvelope:
    labels = apb.Labels(classes=[cls])
    if box:
        labels.regions.append(apb.Region(label="car", box=apb.Box(x=box[0], y=box[1], width=100, height=100)))
    annotation = apb.Annotation(
        name=f"projects/p1/annotations/a{n}",
        task=f"projects/p1/tasks/t{n}",
        item=item,
        schema_version=1,
        annotator=f"user:w{n}",
        labels=labels,
        revision=1,
    )
    context = events_pb2.ItemContext(
        item=item, media_type=common_pb2.MEDIA_TYPE_IMAGE, file_name="x.png", width=640, height=480
    )
    return envelope(
        org,
        annotation.name,
        annotation_submitted=events_pb2.AnnotationSubmitted(
            annotation=annotation,
            redundancy=redundancy,
            item=context,
            rework_of=rework_of,
            task_kind=tasks_pb2.TASK_KIND_REWORK if rework_of else tasks_pb2.TASK_KIND_LABEL,
        ),
    )


def qa_events(runtime: Runtime) -> list[events_pb2.EventEnvelope]:
    runtime.wait_idle()
    records = runtime.bus.subscribe(f"reader-{new_id()}", [TOPIC_QA]).poll(1000, 0)
    return [events_pb2.EventEnvelope.FromString(r.value) for r in records]


@pytest.fixture
def qa(start_services: Callable[..., Runtime]) -> Runtime:
    return start_services([create_component])


@pytest.fixture
def stub(qa: Runtime, channel_to: Callable[[Runtime], grpc.Channel]) -> qa_pb2_grpc.QaServiceStub:
    return qa_pb2_grpc.QaServiceStub(channel_to(qa))


def test_majority_accepts_item(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, caller: Callable[..., object]
) -> None:
    """Three votes with a 2-1 majority and agreeing boxes are accepted automatically and published."""
    md = caller(org="acme").md  # type: ignore[attr-defined]
    publish(qa, TOPIC_TASKS, project_created("acme"))
    publish(qa, TOPIC_ANNOTATIONS, vote("acme", 1, "cat", box=(10, 10)), vote("acme", 2, "cat", box=(14, 10)))
    assert not [e for e in qa_events(qa) if e.HasField("item_accepted")]
    publish(qa, TOPIC_ANNOTATIONS, vote("acme", 3, "dog", box=(12, 10)))
    accepted = [e.item_accepted for e in qa_events(qa) if e.HasField("item_accepted")]
    assert len(accepted) == 1
    label = accepted[0].accepted_label
    assert label.name == "projects/p1/acceptedLabels/i1"
    assert list(label.labels.classes) == ["cat"]
    assert label.accepted_by == "auto"
    assert label.vote_count == 3
    assert label.labels.regions[0].box.x == pytest.approx(12)
    assert accepted[0].item.width == 640
    got = stub.GetAcceptedLabel(qa_pb2.GetAcceptedLabelRequest(name=label.name), metadata=md).accepted_label
    assert got.agreement == pytest.approx(label.agreement)
    listed = stub.ListAcceptedLabels(qa_pb2.ListAcceptedLabelsRequest(parent="projects/p1"), metadata=md)
    assert [a.name for a in listed.accepted_labels] == [label.name]
    quality = stub.GetProjectQuality(qa_pb2.GetProjectQualityRequest(project="projects/p1"), metadata=md)
    assert (quality.accepted_items, quality.pending_reviews, quality.annotation_count) == (1, 0, 3)


def test_duplicate_event_counts_once(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, caller: Callable[..., object]
) -> None:
    """The same vote delivered twice (new event id) is counted once."""
    md = caller(org="acme").md  # type: ignore[attr-defined]
    publish(qa, TOPIC_TASKS, project_created("acme"))
    first = vote("acme", 1, "cat")
    duplicate = vote("acme", 1, "cat")
    publish(qa, TOPIC_ANNOTATIONS, first, first, duplicate, vote("acme", 2, "cat"))
    quality = stub.GetProjectQuality(qa_pb2.GetProjectQualityRequest(project="projects/p1"), metadata=md)
    assert (quality.annotation_count, quality.accepted_items) == (2, 0)


def test_tie_review_reject_rework_accept(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, caller: Callable[..., object]
) -> None:
    """A tie opens a review; rejecting a vote requests rework; the rework vote re-aggregates and accepts."""
    reviewer = caller(org="acme", subject="user:rita", roles=(REVIEWER,)).md  # type: ignore[attr-defined]
    publish(qa, TOPIC_TASKS, project_created("acme", redundancy=2))
    publish(qa, TOPIC_ANNOTATIONS, vote("acme", 1, "cat", redundancy=2), vote("acme", 2, "dog", redundancy=2))
    sent = [e.item_sent_to_review for e in qa_events(qa) if e.HasField("item_sent_to_review")]
    assert len(sent) == 1
    assert sent[0].review.reason == qa_pb2.REVIEW_REASON_TIE
    reviews = stub.ListReviews(qa_pb2.ListReviewsRequest(parent="projects/p1"), metadata=reviewer).reviews
    assert [r.name for r in reviews] == [sent[0].review.name]
    review = reviews[0]
    with pytest.raises(grpc.RpcError) as info:
        stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=review.name), metadata=reviewer)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.RejectAnnotation(
            qa_pb2.RejectAnnotationRequest(
                review=review.name, annotation="projects/p1/annotations/a2", reason=" "
            ),
            metadata=reviewer,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.RejectAnnotation(
            qa_pb2.RejectAnnotationRequest(
                review=review.name, annotation="projects/p1/annotations/a9", reason="no"
            ),
            metadata=reviewer,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rejected = stub.RejectAnnotation(
        qa_pb2.RejectAnnotationRequest(
            review=review.name, annotation="projects/p1/annotations/a2", reason="it is a cat"
        ),
        metadata=reviewer,
    ).review
    assert rejected.state == qa_pb2.REVIEW_STATE_REWORK
    assert rejected.decided_by == "user:rita"
    rework = [e.rework_requested for e in qa_events(qa) if e.HasField("rework_requested")]
    assert len(rework) == 1
    assert (rework[0].annotation, rework[0].task, rework[0].annotator, rework[0].reason) == (
        "projects/p1/annotations/a2",
        "projects/p1/tasks/t2",
        "user:w2",
        "it is a cat",
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=review.name), metadata=reviewer)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    publish(
        qa, TOPIC_ANNOTATIONS, vote("acme", 3, "cat", rework_of="projects/p1/annotations/a2", redundancy=2)
    )
    accepted = [e.item_accepted for e in qa_events(qa) if e.HasField("item_accepted")]
    assert len(accepted) == 1
    assert list(accepted[0].accepted_label.labels.classes) == ["cat"]
    assert accepted[0].accepted_label.vote_count == 2


def test_policy_all_review_approved_with_override(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, caller: Callable[..., object]
) -> None:
    """Under policy ALL a unanimous item waits for review; approval validates override labels and accepts."""
    reviewer = caller(org="acme", subject="user:rita", roles=(REVIEWER,)).md  # type: ignore[attr-defined]
    publish(qa, TOPIC_TASKS, project_created("acme", policy=tasks_pb2.REVIEW_POLICY_ALL, redundancy=1))
    publish(qa, TOPIC_ANNOTATIONS, vote("acme", 1, "cat", redundancy=1))
    review = stub.ListReviews(qa_pb2.ListReviewsRequest(parent="projects/p1"), metadata=reviewer).reviews[0]
    assert review.reason == qa_pb2.REVIEW_REASON_POLICY
    assert len(review.votes) == 1
    bad = apb.Labels(
        classes=["cat"], regions=[apb.Region(label="car", box=apb.Box(x=600, y=0, width=100, height=10))]
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=review.name, labels=bad), metadata=reviewer)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "regions[0].box" in (info.value.details() or "")
    accepted = stub.ApproveReview(
        qa_pb2.ApproveReviewRequest(name=review.name, labels=apb.Labels(classes=["dog"])), metadata=reviewer
    ).accepted_label
    assert list(accepted.labels.classes) == ["dog"]
    assert accepted.accepted_by == "user:rita"
    got = stub.GetReview(qa_pb2.GetReviewRequest(name=review.name), metadata=reviewer).review
    assert got.state == qa_pb2.REVIEW_STATE_APPROVED
    assert [
        e.item_accepted.accepted_label.accepted_by for e in qa_events(qa) if e.HasField("item_accepted")
    ] == ["user:rita"]


def test_annotator_cannot_review(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, caller: Callable[..., object]
) -> None:
    """Review RPCs need a reviewer role: an annotator gets PERMISSION_DENIED."""
    annotator = caller(org="acme", subject="user:w1", roles=(ANNOTATOR,)).md  # type: ignore[attr-defined]
    publish(qa, TOPIC_TASKS, project_created("acme"))
    for call in (
        lambda: stub.ListReviews(qa_pb2.ListReviewsRequest(parent="projects/p1"), metadata=annotator),
        lambda: stub.ApproveReview(
            qa_pb2.ApproveReviewRequest(name="projects/p1/reviews/r1"), metadata=annotator
        ),
        lambda: stub.RejectAnnotation(
            qa_pb2.RejectAnnotationRequest(
                review="projects/p1/reviews/r1", annotation="projects/p1/annotations/a1", reason="x"
            ),
            metadata=annotator,
        ),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_other_org_sees_nothing(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, caller: Callable[..., object]
) -> None:
    """Another organization gets NOT_FOUND for the accepted label, review and project, and cannot approve."""
    mine = caller(org="acme", subject="user:rita", roles=(REVIEWER,)).md  # type: ignore[attr-defined]
    theirs = caller(org="evil", subject="user:rita").md  # type: ignore[attr-defined]
    publish(qa, TOPIC_TASKS, project_created("acme", redundancy=2))
    publish(
        qa,
        TOPIC_ANNOTATIONS,
        vote("acme", 1, "cat", redundancy=2),
        vote("acme", 2, "dog", redundancy=2),
        vote("acme", 3, "cat", item="datasets/d1/items/i2", redundancy=2),
        vote("acme", 4, "cat", item="datasets/d1/items/i2", redundancy=2),
    )
    review = stub.ListReviews(qa_pb2.ListReviewsRequest(parent="projects/p1"), metadata=mine).reviews[0]
    calls = (
        lambda: stub.GetAcceptedLabel(
            qa_pb2.GetAcceptedLabelRequest(name="projects/p1/acceptedLabels/i2"), metadata=theirs
        ),
        lambda: stub.GetReview(qa_pb2.GetReviewRequest(name=review.name), metadata=theirs),
        lambda: stub.ApproveReview(
            qa_pb2.ApproveReviewRequest(name=review.name, labels=apb.Labels(classes=["cat"])), metadata=theirs
        ),
        lambda: stub.ListAcceptedLabels(
            qa_pb2.ListAcceptedLabelsRequest(parent="projects/p1"), metadata=theirs
        ),
        lambda: stub.GetProjectQuality(
            qa_pb2.GetProjectQualityRequest(project="projects/p1"), metadata=theirs
        ),
    )
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        stub.GetReview(qa_pb2.GetReviewRequest(name=review.name), metadata=mine).review.state
        == qa_pb2.REVIEW_STATE_PENDING
    )
    assert (
        stub.GetAcceptedLabel(
            qa_pb2.GetAcceptedLabelRequest(name="projects/p1/acceptedLabels/i2"), metadata=mine
        ).accepted_label.vote_count
        == 2
    )


def test_bad_names_and_tokens(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, caller: Callable[..., object]
) -> None:
    """Malformed names and page tokens are INVALID_ARGUMENT, not INTERNAL."""
    md = caller(org="acme").md  # type: ignore[attr-defined]
    publish(qa, TOPIC_TASKS, project_created("acme"))
    for call in (
        lambda: stub.GetAcceptedLabel(qa_pb2.GetAcceptedLabelRequest(name="../etc"), metadata=md),
        lambda: stub.ListAcceptedLabels(
            qa_pb2.ListAcceptedLabelsRequest(parent="projects/p1", page_token="zz"), metadata=md
        ),
        lambda: stub.ListReviews(qa_pb2.ListReviewsRequest(parent="projects/p1", page_size=-1), metadata=md),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
