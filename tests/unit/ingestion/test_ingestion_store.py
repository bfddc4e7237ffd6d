"""Repository functions on a SQLite file: tenancy, near-duplicate banding at scale, paging."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from annocloud.common.v1 import common_pb2
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.errors import NotFound
from annocloud_server.ingestion import store
from annocloud_server.ingestion.models import Base


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(sqlite_url(str(tmp_path / "ingestion.db")))
    database.create_tables(Base.metadata)
    yield database
    database.dispose()


def image(item_id: str, phash: int) -> store.NewItem:
    return store.NewItem(
        item_id=item_id,
        media_type=common_pb2.MEDIA_TYPE_IMAGE,
        file_name=f"{item_id}.png",
        content_sha256=item_id.rjust(64, "0"),
        content_type="image/png",
        size_bytes=10,
        width=1,
        height=1,
        perceptual_hash=phash,
    )


def test_dataset_tenancy(db: Database) -> None:
    """A dataset is found by its organization only."""
    with db.transaction() as session:
        store.create_dataset(session, organization_id="a", dataset_id="d1", display_name="D", description="")
    with db.transaction() as session:
        assert store.get_dataset(session, organization_id="a", dataset_id="d1").display_name == "D"
        with pytest.raises(NotFound):
            store.get_dataset(session, organization_id="b", dataset_id="d1")


def test_near_duplicate_found_among_thousands_by_bands(db: Database) -> None:
    """With 2,000 random hashes stored, a hash 7 bits from one of them finds exactly that item,
    the dataset count is maintained, and another organization's identical hash is never matched."""
    rng = random.Random(3)
    hashes = [rng.getrandbits(64) for _ in range(2000)]
    with db.transaction() as session:
        store.create_dataset(session, organization_id="a", dataset_id="d1", display_name="D", description="")
        store.create_dataset(session, organization_id="b", dataset_id="d2", display_name="D", description="")
        for index, value in enumerate(hashes):
            store.add_item(session, organization_id="a", dataset_id="d1", new=image(f"i{index}", value))
        store.add_item(session, organization_id="b", dataset_id="d2", new=image("other", hashes[0] ^ 1))
    target = hashes[1234]
    for bit in rng.sample(range(64), 7):
        target ^= 1 << bit
    with db.transaction() as session:
        near = store.find_near_duplicate(session, organization_id="a", dataset_id="d1", phash=target)
        assert near == ("i1234", pytest.approx(1 - 7 / 64))
        assert (
            store.find_near_duplicate(session, organization_id="b", dataset_id="d2", phash=hashes[1234])
            is None
        )
        assert store.get_dataset(session, organization_id="a", dataset_id="d1").item_count == 2000
        added = store.add_item(session, organization_id="a", dataset_id="d1", new=image("new", target))
        assert (added.near_duplicate_of, added.near_duplicate_similarity) == (
            "i1234",
            pytest.approx(1 - 7 / 64),
        )


def test_items_page_in_ingestion_order(db: Database) -> None:
    """list_items walks the dataset in insertion order by keyset."""
    with db.transaction() as session:
        store.create_dataset(session, organization_id="a", dataset_id="d1", display_name="D", description="")
        for index in range(5):
            store.add_item(session, organization_id="a", dataset_id="d1", new=image(f"i{index}", index << 40))
    seen: list[str] = []
    after = None
    with db.transaction() as session:
        while True:
            page = store.list_items(session, organization_id="a", dataset_id="d1", limit=2, after_seq=after)
            if not page:
                break
            seen += [i.id for i in page]
            after = page[-1].seq
        assert store.list_items(session, organization_id="b", dataset_id="d1", limit=10, after_seq=None) == []
    assert seen == [f"i{index}" for index in range(5)]
