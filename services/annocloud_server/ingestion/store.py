"""Repository functions of the ingestion service; every query is scoped by organization."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from annocloud_server.common.errors import NotFound
from annocloud_server.ingestion.deid import Region
from annocloud_server.ingestion.domain import band_keys, most_similar, probe_keys
from annocloud_server.ingestion.models import (
    Dataset,
    IdempotencyKey,
    ImportJobRow,
    Item,
    ItemHashBand,
    SensitiveRegionRow,
)


def now() -> datetime:
    return datetime.now(UTC)


def create_dataset(
    session: Session,
    *,
    organization_id: str,
    dataset_id: str,
    display_name: str,
    description: str,
    deidentify: bool = False,
) -> Dataset:
    dataset = Dataset(
        id=dataset_id,
        organization_id=organization_id,
        display_name=display_name,
        description=description,
        item_count=0,
        create_time=now(),
        deidentify=deidentify,
    )
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, *, organization_id: str, dataset_id: str) -> Dataset:
    dataset = session.scalars(
        select(Dataset).where(Dataset.organization_id == organization_id, Dataset.id == dataset_id)
    ).first()
    if dataset is None:
        raise NotFound(f"dataset datasets/{dataset_id} not found", reason="DATASET_NOT_FOUND")
    return dataset


def list_datasets(
    session: Session, *, organization_id: str, limit: int, before_seq: int | None
) -> list[Dataset]:
    """Newest first; ``limit`` rows after the cursor (pass limit+1 to learn whether more exist)."""
    query = select(Dataset).where(Dataset.organization_id == organization_id)
    if before_seq is not None:
        query = query.where(Dataset.seq < before_seq)
    return list(session.scalars(query.order_by(Dataset.seq.desc()).limit(limit)))


def find_request(session: Session, *, organization_id: str, method: str, request_id: str) -> str | None:
    """The stored result of an earlier create with this request_id, or None."""
    row = session.get(IdempotencyKey, (organization_id, method, request_id))
    return None if row is None else row.result_json


def save_request(
    session: Session, *, organization_id: str, method: str, request_id: str, result_json: str
) -> None:
    session.add(
        IdempotencyKey(
            organization_id=organization_id,
            method=method,
            request_id=request_id,
            result_json=result_json,
            create_time=now(),
        )
    )
    session.flush()


def find_duplicate(
    session: Session, *, organization_id: str, dataset_id: str, sha256s: Sequence[str]
) -> Item | None:
    """The item of the dataset whose stored media or (de-identified) uploaded original has one of
    these hashes: the exact-duplicate rule."""
    wanted = sorted(set(sha256s))
    return session.scalars(
        select(Item)
        .where(
            Item.organization_id == organization_id,
            Item.dataset_id == dataset_id,
            or_(Item.content_sha256.in_(wanted), Item.original_sha256.in_(wanted)),
        )
        .order_by(Item.seq)
    ).first()


def sha_referenced(session: Session, *, sha256: str) -> bool:
    """Whether any item (of any organization) points at this content blob; only for blob cleanup."""
    return session.scalars(select(Item.id).where(Item.content_sha256 == sha256).limit(1)).first() is not None


def find_near_duplicate(
    session: Session, *, organization_id: str, dataset_id: str, phash: int
) -> tuple[str, float] | None:
    """The most similar image of the dataset within hamming 9, looked up by band equality only."""
    keys = probe_keys(phash)
    rows = session.execute(
        select(ItemHashBand.item_id, ItemHashBand.perceptual_hash, Item.seq)
        .join(Item, Item.id == ItemHashBand.item_id)
        .where(
            ItemHashBand.organization_id == organization_id,
            ItemHashBand.dataset_id == dataset_id,
            ItemHashBand.band_key.in_(keys),
        )
        .distinct()
    ).all()
    # Sorted by ingestion order so that, among equally similar items, the earliest wins.
    candidates = [
        (str(r.item_id), int(r.perceptual_hash, 16)) for r in sorted(rows, key=lambda r: int(r.seq))
    ]
    return most_similar(phash, candidates)


@dataclass
class NewItem:
    """Everything an item row needs, decided before the transaction."""

    item_id: str
    media_type: int
    file_name: str
    content_sha256: str
    content_type: str
    size_bytes: int
    width: int = 0
    height: int = 0
    text: str | None = None
    perceptual_hash: int | None = None
    metadata_json: str = "{}"
    source_uri: str = ""
    original_sha256: str | None = None
    """De-identified images: the uploaded bytes' hash (``content_sha256`` is the blurred media)."""
    regions: Sequence[Region] = ()
    """The regions blurred in the media."""


def add_item(session: Session, *, organization_id: str, dataset_id: str, new: NewItem) -> Item:
    """Inserts the item (flagging a near-duplicate), its hash bands, and bumps the dataset count."""
    near: tuple[str, float] | None = None
    phash_hex = ""
    if new.perceptual_hash is not None:
        phash_hex = f"{new.perceptual_hash:016x}"
        near = find_near_duplicate(
            session, organization_id=organization_id, dataset_id=dataset_id, phash=new.perceptual_hash
        )
    item = Item(
        id=new.item_id,
        organization_id=organization_id,
        dataset_id=dataset_id,
        media_type=new.media_type,
        file_name=new.file_name,
        content_sha256=new.content_sha256,
        content_type=new.content_type,
        size_bytes=new.size_bytes,
        width=new.width,
        height=new.height,
        text=new.text,
        perceptual_hash=phash_hex,
        near_duplicate_of=near[0] if near else "",
        near_duplicate_similarity=near[1] if near else 0.0,
        metadata_json=new.metadata_json,
        source_uri=new.source_uri,
        create_time=now(),
        original_sha256=new.original_sha256,
        blurred_regions=len(new.regions),
    )
    session.add(item)
    add_regions(session, organization_id=organization_id, item_id=new.item_id, regions=new.regions)
    if new.perceptual_hash is not None:
        session.add_all(
            ItemHashBand(
                item_id=new.item_id,
                band=index,
                organization_id=organization_id,
                dataset_id=dataset_id,
                band_key=key,
                perceptual_hash=phash_hex,
            )
            for index, key in enumerate(band_keys(new.perceptual_hash))
        )
    session.execute(
        update(Dataset)
        .where(Dataset.organization_id == organization_id, Dataset.id == dataset_id)
        .values(item_count=Dataset.item_count + 1)
    )
    session.flush()
    return item


def get_item(
    session: Session, *, organization_id: str, dataset_id: str, item_id: str, for_update: bool = False
) -> Item:
    query = select(Item).where(
        Item.organization_id == organization_id, Item.dataset_id == dataset_id, Item.id == item_id
    )
    item = session.scalars(query.with_for_update() if for_update else query).first()
    if item is None:
        raise NotFound(f"item datasets/{dataset_id}/items/{item_id} not found", reason="ITEM_NOT_FOUND")
    return item


def add_regions(session: Session, *, organization_id: str, item_id: str, regions: Sequence[Region]) -> None:
    session.add_all(
        SensitiveRegionRow(
            item_id=item_id,
            position=position,
            organization_id=organization_id,
            kind=r.kind,
            x=r.x,
            y=r.y,
            width=r.width,
            height=r.height,
            score=r.score,
            source=r.source,
        )
        for position, r in enumerate(regions)
    )


def list_regions(session: Session, *, organization_id: str, item_id: str) -> list[Region]:
    rows = session.scalars(
        select(SensitiveRegionRow)
        .where(SensitiveRegionRow.organization_id == organization_id, SensitiveRegionRow.item_id == item_id)
        .order_by(SensitiveRegionRow.position)
    )
    return [Region(r.kind, r.x, r.y, r.width, r.height, r.score, r.source) for r in rows]


def replace_media(
    session: Session, *, item: Item, content_sha256: str, size_bytes: int, regions: Sequence[Region]
) -> None:
    """Points a de-identified item at its new blur and stores the regions it was blurred with."""
    session.execute(
        delete(SensitiveRegionRow).where(
            SensitiveRegionRow.organization_id == item.organization_id,
            SensitiveRegionRow.item_id == item.id,
        )
    )
    add_regions(session, organization_id=item.organization_id, item_id=item.id, regions=regions)
    item.content_sha256 = content_sha256
    item.size_bytes = size_bytes
    item.blurred_regions = len(regions)
    session.flush()


def get_items(session: Session, *, organization_id: str, item_ids: Sequence[str]) -> list[Item]:
    """The items with these ids, in the order given (missing ones are left out)."""
    found: dict[str, Item] = {}
    ids = list(item_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        query = select(Item).where(Item.organization_id == organization_id, Item.id.in_(chunk))
        found.update((item.id, item) for item in session.scalars(query))
    return [found[i] for i in item_ids if i in found]


def list_items(
    session: Session, *, organization_id: str, dataset_id: str, limit: int, after_seq: int | None
) -> list[Item]:
    """Ingestion order."""
    query = select(Item).where(Item.organization_id == organization_id, Item.dataset_id == dataset_id)
    if after_seq is not None:
        query = query.where(Item.seq > after_seq)
    return list(session.scalars(query.order_by(Item.seq).limit(limit)))


def find_items_by_file_name(
    session: Session, *, organization_id: str, dataset_id: str, file_name: str, limit: int = 2
) -> list[Item]:
    """Items of the dataset with this file name (an import matches labels to them); at most ``limit``."""
    query = select(Item).where(
        Item.organization_id == organization_id,
        Item.dataset_id == dataset_id,
        Item.file_name == file_name,
    )
    return list(session.scalars(query.order_by(Item.seq).limit(limit)))


# -- import jobs ------------------------------------------------------------------------------


def add_import_job(session: Session, *, job: ImportJobRow) -> ImportJobRow:
    session.add(job)
    session.flush()
    return job


def get_import_job(
    session: Session, *, organization_id: str, dataset_id: str, import_id: str
) -> ImportJobRow:
    job = session.scalars(
        select(ImportJobRow).where(
            ImportJobRow.organization_id == organization_id,
            ImportJobRow.dataset_id == dataset_id,
            ImportJobRow.id == import_id,
        )
    ).first()
    if job is None:
        raise NotFound(
            f"import datasets/{dataset_id}/imports/{import_id} not found", reason="IMPORT_NOT_FOUND"
        )
    return job


def list_import_jobs(
    session: Session, *, organization_id: str, dataset_id: str, limit: int, before_seq: int | None
) -> list[ImportJobRow]:
    """Newest first."""
    query = select(ImportJobRow).where(
        ImportJobRow.organization_id == organization_id, ImportJobRow.dataset_id == dataset_id
    )
    if before_seq is not None:
        query = query.where(ImportJobRow.seq < before_seq)
    return list(session.scalars(query.order_by(ImportJobRow.seq.desc()).limit(limit)))


def claim_import_job(
    session: Session, *, owner: str, now: datetime, lease: timedelta, pending: int, running: int
) -> ImportJobRow | None:
    """Takes the oldest PENDING job, or a RUNNING one whose worker's lease ran out (compare-and-set)."""
    candidates = session.scalars(
        select(ImportJobRow)
        .where(
            (ImportJobRow.state == pending)
            | ((ImportJobRow.state == running) & (ImportJobRow.lease_expire_time < now))
        )
        .order_by(ImportJobRow.seq)
        .limit(5)
    ).all()
    for job in candidates:
        claimed = session.execute(
            update(ImportJobRow)
            .where(
                ImportJobRow.seq == job.seq,
                ImportJobRow.state == job.state,
                ImportJobRow.lease_owner == job.lease_owner,
            )
            .values(state=running, lease_owner=owner, lease_expire_time=now + lease)
            .execution_options(synchronize_session=False)
        )
        if getattr(claimed, "rowcount", 0) == 1:
            session.refresh(job)
            return job
    return None


def hold_import_job(session: Session, *, seq: int, owner: str, until: datetime, running: int) -> bool:
    """Renews the lease; False when another worker took the job over (or it ended)."""
    result = session.execute(
        update(ImportJobRow)
        .where(ImportJobRow.seq == seq, ImportJobRow.lease_owner == owner, ImportJobRow.state == running)
        .values(lease_expire_time=until)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1
