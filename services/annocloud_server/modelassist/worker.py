"""The background side of modelassist: the only code that calls Triton.

``AssistWorker`` drains the queue of ingested items in batches (one Triton request per model per
batch, so the server's dynamic batcher sees full batches): pre-labels become ``PredictionsReady``
events, embeddings are stored; a project whose head is due is retrained and its unlabeled items
rescored (``ItemsRescored``). Triton being down never loses work: the rows stay queued and are
retried with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from annocloud.annotations.v1 import annotations_pb2 as apb
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy import select
from sqlalchemy.orm import Session

from annocloud_server.common.blobstore import BlobStore
from annocloud_server.common.db import Database
from annocloud_server.common.errors import AnnocloudError
from annocloud_server.common.events import EventWriter
from annocloud_server.common.triton import (
    TritonClient,
    TritonInvalidInput,
    TritonModelError,
    TritonUnavailable,
)
from annocloud_server.modelassist import assist, store
from annocloud_server.modelassist.models import AssistProject, PendingItem

log = logging.getLogger(__name__)

BATCH = 16
MAX_BACKOFF = timedelta(minutes=5)
RESCORE_CHUNK = 1000
IMAGE_EMBEDDER = "image_embedder"
TEXT_EMBEDDER = "text_embedder"
MAX_MEDIA_BYTES = 32 * 1024 * 1024


@dataclass
class _Job:
    seq: int
    project_id: str
    item: str
    context: events_pb2.ItemContext
    settings: tasks_pb2.ModelAssistSettings
    data: bytes | None = None
    error: str = ""


@dataclass
class _Results:
    embeddings: dict[int, list[tuple[str, np.ndarray[Any, Any]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    prelabels: dict[int, list[tuple[str, str, assist.PreLabel]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    rejected: set[int] = field(default_factory=set)
    retry: set[int] = field(default_factory=set)


def embedding_model(settings: tasks_pb2.ModelAssistSettings, media_type: int) -> str:
    if settings.embedding_model:
        return settings.embedding_model
    return TEXT_EMBEDDER if media_type == common_pb2.MEDIA_TYPE_TEXT else IMAGE_EMBEDDER


class AssistWorker:
    """Pre-labels, embeds, retrains and rescores in a loop every ``interval`` seconds."""

    def __init__(
        self,
        db: Database,
        writer: EventWriter,
        blobs: BlobStore,
        triton: Callable[[], TritonClient],
        *,
        interval: float = 0.5,
        timeout: float = 30.0,
    ):
        self._db = db
        self._writer = writer
        self._blobs = blobs
        self._triton = triton
        self.interval = interval
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._versions: dict[str, str] = {}
        self._batch_sizes: dict[str, int] = {}
        self._lock = threading.Lock()

    # --- loop -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="modelassist-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
            except Exception:
                log.exception("modelassist worker round failed; retrying next round")

    def run_once(self) -> bool:
        """One batch of queued items and one due retraining; True when there was work."""
        worked = self.process_pending()
        return self.retrain_due() or worked

    # --- pre-labels and embeddings ----------------------------------------------------------------

    def _version(self, client: TritonClient, model: str) -> str:
        with self._lock:
            cached = self._versions.get(model)
        if cached is None:
            cached = client.model_version(model, timeout=self.timeout) or "1"
            with self._lock:
                self._versions[model] = cached
        return cached

    def process_pending(self) -> bool:
        """One batch: claim due rows (read), call Triton outside any transaction, then write the
        results and delete the rows in one transaction (a row another replica already finished is
        skipped, so its events are never written twice)."""
        now = store.utcnow()
        with self._db.read() as session:
            rows = store.due_items(session, now=now, limit=BATCH)
            if not rows:
                return False
            jobs = [self._job(session, row) for row in rows]
        try:
            client = self._triton()
            results = self._infer(client, [j for j in jobs if j.data is not None])
        except TritonUnavailable as error:
            log.warning("Triton unavailable; %d item(s) wait: %s", len(jobs), error)
            with self._db.transaction() as session:
                for job in jobs:
                    store.back_off(session, seq=job.seq, error=str(error), now=now, max_backoff=MAX_BACKOFF)
            return True
        with self._db.transaction() as session:
            for job in jobs:
                if job.seq in results.retry:
                    store.back_off(
                        session, seq=job.seq, error="model not usable", now=now, max_backoff=MAX_BACKOFF
                    )
                    continue
                if not store.claim(session, seq=job.seq):
                    continue  # another worker finished it
                if job.data is None or job.seq in results.rejected:
                    log.warning("dropping %s from the model queue: %s", job.item, job.error or "rejected")
                    continue
                project = session.get(AssistProject, job.project_id)
                if project is None:
                    continue
                for model, vector in results.embeddings.get(job.seq, []):
                    store.store_embedding(session, project=project, item=job.item, model=model, vector=vector)
                for model, version, suggestion in results.prelabels.get(job.seq, []):
                    self._emit_prelabel(session, project, job, model, version, suggestion)
        return True

    def _job(self, session: Session, row: PendingItem) -> _Job:
        project = session.get(AssistProject, row.project_id)
        context = events_pb2.ItemContext.FromString(row.context)
        job = _Job(
            seq=row.seq,
            project_id=row.project_id,
            item=row.item,
            context=context,
            settings=store.settings_of(project) if project is not None else tasks_pb2.ModelAssistSettings(),
        )
        try:
            if context.media_type == common_pb2.MEDIA_TYPE_TEXT:
                job.data = context.text.encode("utf-8")
            else:
                data = b"".join(self._blobs.open(self._blobs.content_key(row.blob_key)))
                if len(data) > MAX_MEDIA_BYTES:
                    raise ValueError(f"media larger than {MAX_MEDIA_BYTES} bytes")
                job.data = data
        except (OSError, ValueError, AnnocloudError) as error:  # e.g. a blob replaced by a re-blur
            job.error = str(error)
        return job

    def _infer(self, client: TritonClient, jobs: list[_Job]) -> _Results:
        """As few requests as the models allow: per (model, input kind), chunks of the model's
        max_batch_size. A rejected chunk is retried item by item, so one bad image never takes
        its neighbours down."""
        results = _Results()
        groups: dict[tuple[str, str, str], list[_Job]] = defaultdict(list)
        for job in jobs:
            text = job.context.media_type == common_pb2.MEDIA_TYPE_TEXT
            if not text:
                for setting in job.settings.prelabel:
                    groups[("detect", setting.model, "IMAGE")].append(job)
            model = embedding_model(job.settings, job.context.media_type)
            groups[("embed", model, "TEXT" if text else "IMAGE")].append(job)
        for (kind, model, input_name), members in sorted(groups.items(), key=lambda kv: kv[0]):
            try:
                size = self._max_batch(client, model)
            except TritonModelError as error:  # e.g. a model name the server does not have
                log.warning("%s is not usable; %d item(s) wait: %s", model, len(members), error)
                results.retry.update(job.seq for job in members)
                continue
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                try:
                    self._run_chunk(client, kind, model, input_name, chunk, results)
                except TritonInvalidInput as error:
                    if len(chunk) == 1:
                        log.warning("%s rejected %s: %s", model, chunk[0].item, error)
                        results.rejected.add(chunk[0].seq)
                        continue
                    for job in chunk:
                        try:
                            self._run_chunk(client, kind, model, input_name, [job], results)
                        except TritonInvalidInput as single:
                            log.warning("%s rejected %s: %s", model, job.item, single)
                            results.rejected.add(job.seq)
        return results

    def _max_batch(self, client: TritonClient, model: str) -> int:
        with self._lock:
            cached = self._batch_sizes.get(model)
        if cached is None:
            cached = max(1, client.max_batch_size(model, timeout=self.timeout))
            with self._lock:
                self._batch_sizes[model] = cached
        return cached

    def _run_chunk(
        self,
        client: TritonClient,
        kind: str,
        model: str,
        input_name: str,
        chunk: list[_Job],
        results: _Results,
    ) -> None:
        inputs = [job.data or b"" for job in chunk]
        if kind == "embed":
            vectors = client.embed_many(model, inputs, input_name=input_name, timeout=self.timeout)
            for row, job in enumerate(chunk):
                results.embeddings[job.seq].append((model, vectors[row]))
            return
        found = client.detect_many(model, inputs, timeout=self.timeout)
        version = self._version(client, model)
        for job, detections in zip(chunk, found, strict=True):
            boxes = [assist.Detection((b.x, b.y, b.width, b.height), b.score) for b in detections.boxes]
            for setting in job.settings.prelabel:
                if setting.model == model:
                    suggestion = assist.prelabel(boxes, label=setting.label, min_score=setting.min_score)
                    results.prelabels[job.seq].append((model, version, suggestion))

    def _emit_prelabel(
        self,
        session: Session,
        project: AssistProject,
        job: _Job,
        model: str,
        version: str,
        suggestion: assist.PreLabel,
    ) -> None:
        labels = apb.Labels(
            regions=[
                apb.Region(label=suggestion.label, box=apb.Box(x=x, y=y, width=w, height=h))
                for x, y, w, h in suggestion.boxes
            ]
        )
        raw = labels.SerializeToString(deterministic=True)
        store.put_suggestion(
            session, project=project, item=job.item, model=model, model_version=version, labels=raw
        )
        self._writer.emit(
            session,
            tenant_id=project.organization_id,
            resource_name=f"projects/{project.project_id}",
            aggregate_version=1,
            payload=events_pb2.PredictionsReady(
                project=f"projects/{project.project_id}",
                item=job.context,
                model=model,
                model_version=version,
                score=suggestion.score,
                labels=labels,
            ),
        )

    # --- heads and rescoring ----------------------------------------------------------------------

    def retrain_due(self) -> bool:
        with self._db.read() as session:
            due = list(
                session.execute(
                    select(AssistProject.project_id).where(AssistProject.rescore_due == 1).limit(1)
                ).scalars()
            )
        for project_id in due:
            with self._db.transaction() as session:
                project = session.get(AssistProject, project_id)
                if project is not None and project.rescore_due:
                    rescore_project(session, self._writer, project)
        return bool(due)


def rescore_project(session: Session, writer: EventWriter, project: AssistProject) -> int:
    """Retrains the head when the accepted classes allow it, scores the unlabeled items (or orders
    them by the cold start), emits ItemsRescored; returns how many items were scored."""
    settings = store.settings_of(project)
    items, vectors = store.embeddings(session, project_id=project.project_id)
    labeled = store.accepted_classes(session, project_id=project.project_id)
    project.rescore_due = 0
    if not items:
        return 0
    strategy = tasks_pb2.SamplingStrategy.Name(settings.strategy or tasks_pb2.SAMPLING_STRATEGY_NONE)
    train_rows = [i for i, item in enumerate(items) if item in labeled]
    committee_size = 5 if settings.strategy == tasks_pb2.SAMPLING_STRATEGY_COMMITTEE else 0
    head, committee = assist.train(
        embeddings=vectors[train_rows] if train_rows else np.zeros((0, vectors.shape[1])),
        labels=[labeled[items[i]] for i in train_rows],
        classes=store.classes_of(project),
        committee_size=committee_size,
    )
    unlabeled = [i for i, item in enumerate(items) if item not in labeled]
    names = [items[i] for i in unlabeled]
    seed = project.head_version + len(train_rows)
    if head is not None:
        store.save_head(project, head, committee)
        project.head_version += 1
        project.trained_on = len(train_rows)
        project.labels_since_training = 0
        project.train_time = store.utcnow()
        scored = assist.rescore(
            items=names,
            embeddings=vectors[unlabeled],
            strategy=strategy,
            head=head,
            committee=committee,
            seed=seed,
        )
        label = strategy
    else:
        diversity = settings.cold_start == tasks_pb2.COLD_START_DIVERSITY
        scored = assist.cold_start_order(
            items=names, embeddings=vectors[unlabeled], diversity=diversity, seed=seed
        )
        label = tasks_pb2.ColdStart.Name(settings.cold_start or tasks_pb2.COLD_START_RANDOM)
    project.scored_items = len(scored)
    for start in range(0, len(scored), RESCORE_CHUNK):
        chunk = scored[start : start + RESCORE_CHUNK]
        writer.emit(
            session,
            tenant_id=project.organization_id,
            resource_name=f"projects/{project.project_id}",
            aggregate_version=project.head_version,
            payload=events_pb2.ItemsRescored(
                project=f"projects/{project.project_id}",
                strategy=label,
                head_version=project.head_version if head is not None else 0,
                scores=[
                    events_pb2.ItemScore(item=s.item, uncertainty=s.uncertainty, priority=s.priority)
                    for s in chunk
                ],
            ),
        )
    return len(scored)
