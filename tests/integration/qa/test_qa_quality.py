"""QaService quality assurance on the bus: review stages, rework codes, escalation, audit, dynamic overlap,
gold scoring and worker quality with vendor isolation (issue #5)."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from annocloud.annotations.v1 import annotations_pb2 as apb
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.qa.v1 import qa_pb2, qa_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.auth import ANNOTATOR, MANAGER, REVIEWER
from annocloud_server.common.events import TOPIC_ANNOTATIONS, TOPIC_QA, TOPIC_TASKS, OutgoingRecord
from annocloud_server.common.paging import new_id
from annocloud_server.qa.component import create_component
from annocloud_server.runtime import Runtime

EXPERT_REVIEWER = common_pb2.ROLE_EXPERT_REVIEWER
VENDOR_ADMIN = common_pb2.ROLE_VENDOR_ADMIN
VENDOR_WORKER = common_pb2.ROLE_VENDOR_WORKER
PEER = tasks_pb2.REVIEW_STAGE_PEER
MANAGER_STAGE = tasks_pb2.REVIEW_STAGE_MANAGER

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
    quality: tasks_pb2.QualitySettings,
    *,
    redundancy: int = 2,
    policy: int = tasks_pb2.REVIEW_POLICY_DISAGREEMENT,
) -> events_pb2.EventEnvelope:
    project = tasks_pb2.Project(
        name="projects/p1",
        redundancy=redundancy,
        review_policy=policy,  # type: ignore[arg-type]
        min_agreement=0.5,
        quality=quality,
    )
    return envelope(
        "acme", "projects/p1", project_created=events_pb2.ProjectCreated(project=project, schema=SCHEMA)
    )


def vote(
    n: int,
    cls: str,
    *,
    item: str = "datasets/d1/items/i1",
    rework_of: str = "",
    org: str = "vend-a",
    worker: str = "",
    seconds: float = 30.0,
    redundancy: int = 2,
) -> events_pb2.EventEnvelope:
    annotation = apb.Annotation(
        name=f"projects/p1/annotations/a{n}",
        task=f"projects/p1/tasks/t{n}",
        item=item,
        schema_version=1,
        annotator=worker or f"user:w{n}",
        labels=apb.Labels(classes=[cls]),
        revision=1,
    )
    context = events_pb2.ItemContext(
        item=item, media_type=common_pb2.MEDIA_TYPE_IMAGE, file_name="x.png", width=640, height=480
    )
    return envelope(
        "acme",
        annotation.name,
        annotation_submitted=events_pb2.AnnotationSubmitted(
            annotation=annotation,
            redundancy=redundancy,
            item=context,
            rework_of=rework_of,
            task_kind=tasks_pb2.TASK_KIND_REWORK if rework_of else tasks_pb2.TASK_KIND_LABEL,
            annotator_organization=org,
            handle_seconds=seconds,
        ),
    )


def qa_events(runtime: Runtime, kind: str) -> list[events_pb2.EventEnvelope]:
    runtime.wait_idle()
    records = runtime.bus.subscribe(f"reader-{new_id()}", [TOPIC_QA]).poll(1000, 0)
    envelopes = [events_pb2.EventEnvelope.FromString(r.value) for r in records]
    return [e for e in envelopes if e.HasField(kind)]  # type: ignore[arg-type]


def decisions(runtime: Runtime) -> list[int]:
    return [e.review_decided.decision for e in qa_events(runtime, "review_decided")]


def denied(call: Callable[[], object], reason: str = "") -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason in (info.value.details() or "") or not reason


@pytest.fixture
def qa(start_services: Callable[..., Runtime]) -> Runtime:
    return start_services([create_component])


@pytest.fixture
def stub(qa: Runtime, channel_to: Callable[[Runtime], grpc.Channel]) -> qa_pb2_grpc.QaServiceStub:
    return qa_pb2_grpc.QaServiceStub(channel_to(qa))


Md = tuple[tuple[str, str | bytes], ...]
MdFactory = Callable[..., Md]


@pytest.fixture
def md(caller: Callable[..., object]) -> MdFactory:
    """md(subject, *roles, org="acme"): signed call metadata."""

    def make(subject: str, *roles: int, org: str = "acme") -> Md:
        return caller(org=org, subject=subject, roles=roles).md  # type: ignore[attr-defined,no-any-return]

    return make


def pending(stub: qa_pb2_grpc.QaServiceStub, md: Md) -> list[qa_pb2.Review]:
    return list(stub.ListReviews(qa_pb2.ListReviewsRequest(parent="projects/p1"), metadata=md).reviews)


def test_peer_then_manager_stage_then_accept(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, md: MdFactory
) -> None:
    """With stages PEER, MANAGER an agreed item is reviewed by a peer (not its annotator), passed to a
    manager, then accepted with its credited work; each decision emits ReviewDecided."""
    rita, boss = md("user:rita", REVIEWER), md("user:boss", MANAGER)
    own = md("user:w1", REVIEWER)
    publish(qa, TOPIC_TASKS, project_created(tasks_pb2.QualitySettings(review_stages=[PEER, MANAGER_STAGE])))
    publish(qa, TOPIC_ANNOTATIONS, vote(1, "cat"), vote(2, "cat", org="vend-b"))
    assert not qa_events(qa, "item_accepted")
    (peer,) = pending(stub, rita)
    assert (peer.stage, peer.reason) == (PEER, qa_pb2.REVIEW_REASON_POLICY)
    assert peer.confidence == pytest.approx(0.49 / 0.58)
    denied(lambda: stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=peer.name), metadata=own), "own")
    passed = stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=peer.name), metadata=rita)
    assert not passed.HasField("accepted_label")
    got = stub.GetReview(qa_pb2.GetReviewRequest(name=peer.name), metadata=rita).review
    assert got.state == qa_pb2.REVIEW_STATE_PASSED
    (manager,) = pending(stub, rita)
    assert (manager.stage, manager.reason) == (MANAGER_STAGE, qa_pb2.REVIEW_REASON_NEXT_STAGE)
    assert [v.annotation for v in manager.votes] == [v.annotation for v in peer.votes]
    denied(lambda: stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=manager.name), metadata=rita))
    accepted = stub.ApproveReview(
        qa_pb2.ApproveReviewRequest(name=manager.name), metadata=boss
    ).accepted_label
    assert list(accepted.labels.classes) == ["cat"]
    assert accepted.confidence == pytest.approx(peer.confidence)
    assert decisions(qa) == [qa_pb2.REVIEW_DECISION_PASSED, qa_pb2.REVIEW_DECISION_APPROVED]
    decided = qa_events(qa, "review_decided")
    assert [e.resource_name for e in decided] == [peer.name, manager.name]
    (event,) = [e.item_accepted for e in qa_events(qa, "item_accepted")]
    assert [(c.task, c.annotation, c.annotator, c.annotator_organization) for c in event.credited] == [
        ("projects/p1/tasks/t1", "projects/p1/annotations/a1", "user:w1", "vend-a"),
        ("projects/p1/tasks/t2", "projects/p1/annotations/a2", "user:w2", "vend-b"),
    ]


def test_reject_with_taxonomy_code_is_rereviewed_at_the_rejecting_stage(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, md: MdFactory
) -> None:
    """A manager-stage rejection needs a taxonomy code, carries it on ReworkRequested and the review,
    and the reworked item comes back to the manager stage (REWORKED, round 1) whatever its agreement."""
    rita, boss = md("user:rita", REVIEWER), md("user:boss", MANAGER)
    quality = tasks_pb2.QualitySettings(
        review_stages=[PEER, MANAGER_STAGE],
        error_taxonomy=[tasks_pb2.ErrorCode(code="wrong_class"), tasks_pb2.ErrorCode(code="missed_object")],
    )
    publish(qa, TOPIC_TASKS, project_created(quality))
    publish(qa, TOPIC_ANNOTATIONS, vote(1, "cat"), vote(2, "dog"))
    (peer,) = pending(stub, rita)
    assert peer.reason == qa_pb2.REVIEW_REASON_TIE
    stub.ApproveReview(
        qa_pb2.ApproveReviewRequest(name=peer.name, labels=apb.Labels(classes=["cat"])), metadata=rita
    )
    (manager,) = pending(stub, boss)
    assert list(manager.proposal.classes) == ["cat"]

    def reject(code: str) -> qa_pb2.Review:
        request = qa_pb2.RejectAnnotationRequest(
            review=manager.name,
            annotation="projects/p1/annotations/a2",
            reason="it is a cat",
            reason_code=code,
        )
        return stub.RejectAnnotation(request, metadata=boss).review

    for code, reason in (("", "REASON_CODE_REQUIRED"), ("typo", "BAD_REASON_CODE")):
        with pytest.raises(grpc.RpcError) as info:
            reject(code)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "wrong_class" in (info.value.details() or ""), reason
    rejected = reject("wrong_class")
    assert (rejected.state, rejected.reason_code, rejected.rework_round) == (
        qa_pb2.REVIEW_STATE_REWORK,
        "wrong_class",
        1,
    )
    (rework,) = [e.rework_requested for e in qa_events(qa, "rework_requested")]
    assert (rework.annotation, rework.reason_code) == ("projects/p1/annotations/a2", "wrong_class")
    assert decisions(qa)[-1] == qa_pb2.REVIEW_DECISION_REJECTED
    assert qa_events(qa, "review_decided")[-1].review_decided.annotation == "projects/p1/annotations/a2"
    publish(qa, TOPIC_ANNOTATIONS, vote(3, "cat", rework_of="projects/p1/annotations/a2"))
    (again,) = pending(stub, boss)
    assert (again.stage, again.reason, again.rework_round) == (
        MANAGER_STAGE,
        qa_pb2.REVIEW_REASON_REWORKED,
        1,
    )
    assert {v.annotation for v in again.votes} == {"projects/p1/annotations/a1", "projects/p1/annotations/a3"}
    accepted = stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=again.name), metadata=boss).accepted_label
    assert accepted.vote_count == 2


def test_escalation_to_expert_and_reviewer_cannot_decide_it(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, md: MdFactory
) -> None:
    """Escalating needs a note; the review becomes ESCALATED and a new EXPERT review opens (ItemSentToReview),
    which a reviewer cannot decide and an expert reviewer accepts."""
    rita, expert = md("user:rita", REVIEWER), md("user:eve", EXPERT_REVIEWER)
    publish(qa, TOPIC_TASKS, project_created(tasks_pb2.QualitySettings(), policy=tasks_pb2.REVIEW_POLICY_ALL))
    publish(qa, TOPIC_ANNOTATIONS, vote(1, "cat"), vote(2, "cat"))
    (peer,) = pending(stub, rita)
    assert peer.stage == PEER
    for note in ("", "x" * 1001):
        with pytest.raises(grpc.RpcError) as info:
            stub.EscalateReview(qa_pb2.EscalateReviewRequest(name=peer.name, note=note), metadata=rita)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    expert_review = stub.EscalateReview(
        qa_pb2.EscalateReviewRequest(name=peer.name, note="is that a lynx?"), metadata=rita
    ).review
    assert (expert_review.stage, expert_review.reason, expert_review.escalation_note) == (
        tasks_pb2.REVIEW_STAGE_EXPERT,
        qa_pb2.REVIEW_REASON_ESCALATED,
        "is that a lynx?",
    )
    assert stub.GetReview(qa_pb2.GetReviewRequest(name=peer.name), metadata=rita).review.state == (
        qa_pb2.REVIEW_STATE_ESCALATED
    )
    assert [e.item_sent_to_review.review.name for e in qa_events(qa, "item_sent_to_review")] == [
        peer.name,
        expert_review.name,
    ]
    assert decisions(qa) == [qa_pb2.REVIEW_DECISION_ESCALATED]
    denied(lambda: stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=expert_review.name), metadata=rita))
    accepted = stub.ApproveReview(
        qa_pb2.ApproveReviewRequest(name=expert_review.name), metadata=expert
    ).accepted_label
    assert accepted.accepted_by == "user:eve"
    assert decisions(qa) == [qa_pb2.REVIEW_DECISION_ESCALATED, qa_pb2.REVIEW_DECISION_APPROVED]


def test_audit_reject_revokes_acceptance_and_rework_is_reaccepted(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, md: MdFactory
) -> None:
    """At audit rate 1 every acceptance is audited while staying accepted; an audit approval changes
    nothing, an audit rejection revokes the acceptance (AcceptanceRevoked with the rejected work) and
    the reworked item is re-reviewed at AUDIT, whose approval accepts it again."""
    boss = md("user:boss", MANAGER)
    publish(qa, TOPIC_TASKS, project_created(tasks_pb2.QualitySettings(audit_rate=1.0)))
    publish(
        qa,
        TOPIC_ANNOTATIONS,
        vote(1, "cat"),
        vote(2, "cat", org="vend-b"),
        vote(5, "dog", item="datasets/d1/items/i2"),
        vote(6, "dog", item="datasets/d1/items/i2"),
    )
    assert len(qa_events(qa, "item_accepted")) == 2
    audits = {r.item: r for r in pending(stub, boss)}
    assert {r.stage for r in audits.values()} == {tasks_pb2.REVIEW_STAGE_AUDIT}
    assert {r.reason for r in audits.values()} == {qa_pb2.REVIEW_REASON_AUDIT}
    label = "projects/p1/acceptedLabels/i1"
    assert stub.GetAcceptedLabel(
        qa_pb2.GetAcceptedLabelRequest(name=label), metadata=boss
    ).accepted_label.item

    stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=audits["datasets/d1/items/i2"].name), metadata=boss)
    assert decisions(qa) == [qa_pb2.REVIEW_DECISION_APPROVED]
    assert len(qa_events(qa, "item_accepted")) == 2

    stub.RejectAnnotation(
        qa_pb2.RejectAnnotationRequest(
            review=audits["datasets/d1/items/i1"].name,
            annotation="projects/p1/annotations/a2",
            reason="that is a dog",
        ),
        metadata=boss,
    )
    (revoked,) = qa_events(qa, "acceptance_revoked")
    assert revoked.resource_name == label
    event = revoked.acceptance_revoked
    assert (event.accepted_label, event.reason, event.decided_by) == (label, "that is a dog", "user:boss")
    assert [(c.task, c.annotation, c.annotator, c.annotator_organization) for c in event.revoked] == [
        ("projects/p1/tasks/t2", "projects/p1/annotations/a2", "user:w2", "vend-b")
    ]
    assert len(qa_events(qa, "rework_requested")) == 1
    with pytest.raises(grpc.RpcError) as info:
        stub.GetAcceptedLabel(qa_pb2.GetAcceptedLabelRequest(name=label), metadata=boss)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    publish(qa, TOPIC_ANNOTATIONS, vote(3, "cat", rework_of="projects/p1/annotations/a2", org="vend-b"))
    (again,) = pending(stub, boss)
    assert (again.stage, again.reason) == (tasks_pb2.REVIEW_STAGE_AUDIT, qa_pb2.REVIEW_REASON_REWORKED)
    accepted = stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=again.name), metadata=boss).accepted_label
    assert accepted.name == label
    assert len(qa_events(qa, "item_accepted")) == 3
    assert pending(stub, boss) == []  # an acceptance by the auditor is not audited again


def test_dynamic_overlap_accepts_two_agreeing_reliable_votes(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, md: MdFactory
) -> None:
    """min 2 / max 3 / threshold 0.8: two agreeing votes at the default reliability reach 0.84 and accept."""
    overlap = tasks_pb2.DynamicOverlap(min_labels=2, max_labels=3, confidence_threshold=0.8)
    publish(
        qa, TOPIC_TASKS, project_created(tasks_pb2.QualitySettings(dynamic_overlap=overlap), redundancy=5)
    )
    publish(qa, TOPIC_ANNOTATIONS, vote(1, "cat", redundancy=5))
    assert not qa_events(qa, "more_labels_requested")
    publish(qa, TOPIC_ANNOTATIONS, vote(2, "cat", redundancy=5))
    (accepted,) = [e.item_accepted.accepted_label for e in qa_events(qa, "item_accepted")]
    assert accepted.confidence == pytest.approx(0.49 / 0.58)
    assert not qa_events(qa, "more_labels_requested")
    assert not qa_events(qa, "item_difficulty_assessed")


def test_dynamic_overlap_disagreement_asks_for_more_then_reviews_at_max(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, md: MdFactory
) -> None:
    """A 1-1 split emits ItemDifficultyAssessed and MoreLabelsRequested(3) once (a redelivered vote adds
    nothing); at max labels a 2-1 split below the threshold goes to review as LOW_CONFIDENCE."""
    rita = md("user:rita", REVIEWER)
    overlap = tasks_pb2.DynamicOverlap(min_labels=2, max_labels=3, confidence_threshold=0.8)
    publish(qa, TOPIC_TASKS, project_created(tasks_pb2.QualitySettings(dynamic_overlap=overlap)))
    publish(qa, TOPIC_ANNOTATIONS, vote(1, "cat"), vote(2, "dog"), vote(2, "dog"))
    (more,) = qa_events(qa, "more_labels_requested")
    assert more.resource_name == "projects/p1"
    assert (more.more_labels_requested.labels_wanted, more.more_labels_requested.item.item) == (
        3,
        "datasets/d1/items/i1",
    )
    assert more.more_labels_requested.confidence == pytest.approx(0.5)
    (difficulty,) = [e.item_difficulty_assessed for e in qa_events(qa, "item_difficulty_assessed")]
    assert (difficulty.item, difficulty.source) == ("datasets/d1/items/i1", "disagreement")
    assert difficulty.difficulty == pytest.approx(0.5)
    publish(qa, TOPIC_ANNOTATIONS, vote(3, "cat"))
    assert len(qa_events(qa, "more_labels_requested")) == 1
    assert not qa_events(qa, "item_accepted")
    (review,) = pending(stub, rita)
    assert review.reason == qa_pb2.REVIEW_REASON_LOW_CONFIDENCE
    assert review.confidence == pytest.approx(0.147 / 0.21)
    assert len(review.votes) == 3


def test_gold_answers_are_scored_and_not_counted(
    qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, md: MdFactory
) -> None:
    """Managers add gold items (validated, unique); answers to them emit WorkerScored and never become
    votes; only managers list gold items."""
    boss, rita = md("user:boss", MANAGER), md("user:rita", REVIEWER)
    publish(qa, TOPIC_TASKS, project_created(tasks_pb2.QualitySettings()))
    gold_item = "datasets/d1/items/g1"

    def create(labels: apb.Labels, who: Md = boss) -> qa_pb2.GoldItem:
        request = qa_pb2.CreateGoldItemRequest(parent="projects/p1", item=gold_item, labels=labels)
        return stub.CreateGoldItem(request, metadata=who).gold_item

    denied(lambda: create(apb.Labels(classes=["cat"]), rita))
    with pytest.raises(grpc.RpcError) as info:
        create(apb.Labels(classes=["cow"]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    gold = create(apb.Labels(classes=["cat"]))
    assert gold.name == "projects/p1/goldItems/g1"
    with pytest.raises(grpc.RpcError) as info:
        create(apb.Labels(classes=["dog"]))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    (added,) = qa_events(qa, "gold_item_added")
    assert (added.resource_name, added.gold_item_added.item) == (gold.name, gold_item)

    publish(
        qa,
        TOPIC_ANNOTATIONS,
        vote(1, "cat", item=gold_item),
        vote(2, "dog", item=gold_item, worker="user:w1"),
    )
    publish(qa, TOPIC_ANNOTATIONS, vote(1, "cat", item=gold_item))  # redelivered: scored once
    scored = qa_events(qa, "worker_scored")
    assert {e.resource_name for e in scored} == {"projects/p1"}
    assert [
        (s.worker, s.worker_organization, s.correct, s.gold_answered, s.gold_correct)
        for s in (e.worker_scored for e in scored)
    ] == [("user:w1", "vend-a", True, 1, 1), ("user:w1", "vend-a", False, 2, 1)]
    assert scored[-1].worker_scored.gold_accuracy == pytest.approx(3 / 5)
    assert not qa_events(qa, "item_accepted")
    assert not qa_events(qa, "item_sent_to_review")
    quality = stub.GetProjectQuality(qa_pb2.GetProjectQualityRequest(project="projects/p1"), metadata=boss)
    assert quality.annotation_count == 0
    listed = stub.ListGoldItems(qa_pb2.ListGoldItemsRequest(parent="projects/p1"), metadata=boss)
    assert [g.name for g in listed.gold_items] == [gold.name]
    denied(lambda: stub.ListGoldItems(qa_pb2.ListGoldItemsRequest(parent="projects/p1"), metadata=rita))
    (worker,) = stub.ListWorkerQuality(
        qa_pb2.ListWorkerQualityRequest(parent="projects/p1"), metadata=boss
    ).workers
    assert (worker.worker, worker.gold_answered, worker.gold_correct, worker.annotations) == (
        "user:w1",
        2,
        1,
        0,
    )
    assert worker.reliability == pytest.approx(3 / 5)


def test_worker_quality_vendor_isolation(qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, md: MdFactory) -> None:
    """The owner sees every worker (optionally one vendor's); a vendor admin sees only its own workers and
    vendor row; a vendor worker is denied; an unrelated vendor or organization gets NOT_FOUND."""
    publish(qa, TOPIC_TASKS, project_created(tasks_pb2.QualitySettings()))
    publish(
        qa,
        TOPIC_ANNOTATIONS,
        vote(1, "cat", org="vend-a", seconds=60),
        vote(2, "cat", org="vend-b", seconds=120),
        vote(3, "cat", org="vend-a", seconds=30, item="datasets/d1/items/i2"),
        vote(4, "cat", org="acme", item="datasets/d1/items/i2"),
    )
    owner = md("user:admin", common_pb2.ROLE_ORG_ADMIN)

    def workers(who: Md, vendor: str = "") -> list[qa_pb2.WorkerQuality]:
        request = qa_pb2.ListWorkerQualityRequest(parent="projects/p1", vendor=vendor)
        return list(stub.ListWorkerQuality(request, metadata=who).workers)

    everyone = workers(owner)
    assert [(w.worker, w.vendor) for w in everyone] == [
        ("user:w1", "vendors/vend-a"),
        ("user:w2", "vendors/vend-b"),
        ("user:w3", "vendors/vend-a"),
        ("user:w4", "vendors/acme"),
    ]
    w1 = everyone[0]
    assert (w1.annotations, w1.median_handle_seconds) == (1, 60.0)
    assert w1.tasks_per_hour == pytest.approx(60.0)
    assert w1.kappa_vs_accepted == pytest.approx(1.0)
    assert w1.reliability == pytest.approx(3 / 4)  # one vote agreeing with an accepted label
    assert [w.worker for w in workers(owner, "vendors/vend-b")] == ["user:w2"]

    vendor_a = md("user:va", VENDOR_ADMIN, org="vend-a")
    assert [w.worker for w in workers(vendor_a)] == ["user:w1", "user:w3"]
    denied(lambda: workers(vendor_a, "vendors/vend-b"))
    vendors = stub.ListVendorQuality(qa_pb2.ListVendorQualityRequest(parent="projects/p1"), metadata=vendor_a)
    assert [(v.vendor, v.workers, v.annotations) for v in vendors.vendors] == [("vendors/vend-a", 2, 2)]
    assert vendors.vendors[0].tasks_per_hour == pytest.approx(60.0 + 120.0)
    all_vendors = stub.ListVendorQuality(
        qa_pb2.ListVendorQualityRequest(parent="projects/p1"), metadata=owner
    )
    assert [v.vendor for v in all_vendors.vendors] == ["vendors/acme", "vendors/vend-a", "vendors/vend-b"]

    denied(lambda: workers(md("user:w1", VENDOR_WORKER, org="vend-a")))
    denied(lambda: workers(md("user:w4", ANNOTATOR)))
    for stranger in (md("user:vc", VENDOR_ADMIN, org="vend-c"), md("user:x", MANAGER, org="evil")):
        with pytest.raises(grpc.RpcError) as info:
            workers(stranger)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_annotator_cannot_approve(qa: Runtime, stub: qa_pb2_grpc.QaServiceStub, md: MdFactory) -> None:
    """An annotator or vendor worker gets PERMISSION_DENIED on approve, reject and escalate of a real
    pending review, which stays PENDING."""
    rita = md("user:rita", REVIEWER)
    publish(qa, TOPIC_TASKS, project_created(tasks_pb2.QualitySettings(), policy=tasks_pb2.REVIEW_POLICY_ALL))
    publish(qa, TOPIC_ANNOTATIONS, vote(1, "cat"), vote(2, "cat"))
    (review,) = pending(stub, rita)

    def attempts(who: Md) -> list[Callable[[], object]]:
        return [
            lambda: stub.ApproveReview(qa_pb2.ApproveReviewRequest(name=review.name), metadata=who),
            lambda: stub.RejectAnnotation(
                qa_pb2.RejectAnnotationRequest(
                    review=review.name, annotation="projects/p1/annotations/a1", reason="no"
                ),
                metadata=who,
            ),
            lambda: stub.EscalateReview(
                qa_pb2.EscalateReviewRequest(name=review.name, note="hm"), metadata=who
            ),
        ]

    for who in (md("user:w9", ANNOTATOR), md("user:w8", VENDOR_WORKER)):
        for attempt in attempts(who):
            denied(attempt, "ROLE")
    assert stub.GetReview(qa_pb2.GetReviewRequest(name=review.name), metadata=rita).review.state == (
        qa_pb2.REVIEW_STATE_PENDING
    )
    assert decisions(qa) == []
