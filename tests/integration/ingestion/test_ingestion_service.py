"""The ingestion service over real gRPC: datasets, uploads, duplicates, bombs, text, tenancy."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.ingestion.v1 import ingestion_pb2 as pb
from annocloud.ingestion.v1 import ingestion_pb2_grpc
from annocloud_server.common.auth import ANNOTATOR
from annocloud_server.common.events import TOPIC_INGESTION
from annocloud_server.ingestion.component import create_component
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image

Stub = ingestion_pb2_grpc.IngestionServiceStub


def smooth_image(seed: int, brighten: int = 0, size: tuple[int, int] = (120, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    base = Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    pixels = np.clip(np.asarray(base.convert("RGB")).astype(int) + brighten, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def upload_messages(
    parent: str,
    file_name: str,
    data: bytes,
    *,
    chunk: int = 4096,
    request_id: str = "",
    meta: dict[str, Any] | None = None,
) -> Iterator[pb.UploadItemRequest]:
    metadata = struct_pb2.Struct()
    metadata.update(meta or {})
    yield pb.UploadItemRequest(
        header=pb.UploadItemHeader(
            parent=parent, file_name=file_name, metadata=metadata, request_id=request_id
        )
    )
    for start in range(0, len(data), chunk):
        yield pb.UploadItemRequest(chunk=data[start : start + chunk])


def reason_of(err: grpc.RpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return str(info.reason)


@pytest.fixture
def env(
    start_services: Callable[..., Any],
    channel_to: Callable[..., Any],
    caller: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    monkeypatch.setenv("ANNOCLOUD_MAX_UPLOAD_BYTES", str(4 * 1024 * 1024))
    runtime = start_services([create_component])

    class Env:
        rt = runtime
        stub = Stub(channel_to(runtime))
        acme = caller(org="acme", subject="user:mgr")
        other = caller(org="globex", subject="user:mallory")

        def dataset(self, name: str = "Cars") -> str:
            response = self.stub.CreateDataset(
                pb.CreateDatasetRequest(dataset=pb.Dataset(display_name=name)), metadata=self.acme.md
            )
            return str(response.dataset.name)

        def upload(self, parent: str, file_name: str, data: bytes, **kw: Any) -> pb.UploadItemResponse:
            return self.stub.UploadItem(upload_messages(parent, file_name, data, **kw), metadata=self.acme.md)

        def blob_files(self) -> list[Path]:
            """Content blobs on disk (the runtime keeps them under <data dir>/blobs/sha256)."""
            data_dir = Path(runtime.components[0].db.url.split("///", 1)[1]).parent
            return [p for p in (data_dir / "blobs" / "sha256").rglob("*") if p.is_file()]

    return Env()


def events(runtime: Any, count: int) -> list[events_pb2.EventEnvelope]:
    runtime.wait_idle()
    subscription = runtime.bus.subscribe("test-reader", [TOPIC_INGESTION])
    records = subscription.poll(100, 2.0)
    envelopes = [events_pb2.EventEnvelope.FromString(r.value) for r in records]
    assert len(envelopes) == count
    return envelopes


def test_dataset_create_get_list_and_idempotency(env: Any) -> None:
    """CreateDataset is idempotent on request_id; ListDatasets pages newest first; Get round-trips."""
    md = env.acme.md
    first = env.stub.CreateDataset(
        pb.CreateDatasetRequest(dataset=pb.Dataset(display_name="A", description="d"), request_id="r1"),
        metadata=md,
    ).dataset
    again = env.stub.CreateDataset(
        pb.CreateDatasetRequest(dataset=pb.Dataset(display_name="A"), request_id="r1"), metadata=md
    ).dataset
    assert again.name == first.name
    names = [first.name] + [env.dataset(f"D{i}") for i in range(4)]
    seen: list[str] = []
    token = ""
    while True:
        page = env.stub.ListDatasets(pb.ListDatasetsRequest(page_size=2, page_token=token), metadata=md)
        seen += [d.name for d in page.datasets]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(names))
    got = env.stub.GetDataset(pb.GetDatasetRequest(name=first.name), metadata=md).dataset
    assert (got.display_name, got.description, got.item_count) == ("A", "d", 0)


def test_dataset_bad_input_and_roles(env: Any, caller: Callable[..., Any]) -> None:
    """Blank or over-long names, bad tokens and names are INVALID_ARGUMENT; annotators cannot create."""
    md = env.acme.md
    for name, reason in (("", "DISPLAY_NAME_REQUIRED"), ("x" * 201, "DISPLAY_NAME_TOO_LONG")):
        with pytest.raises(grpc.RpcError) as err:
            env.stub.CreateDataset(
                pb.CreateDatasetRequest(dataset=pb.Dataset(display_name=name)), metadata=md
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(err.value) == reason
    with pytest.raises(grpc.RpcError) as err:
        env.stub.ListDatasets(pb.ListDatasetsRequest(page_token="!!garbage"), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        env.stub.GetDataset(pb.GetDatasetRequest(name="projects/x"), metadata=md)
    assert reason_of(err.value) == "BAD_RESOURCE_NAME"
    annotator = caller(org="acme", subject="user:ann", roles=(ANNOTATOR,))
    with pytest.raises(grpc.RpcError) as err:
        env.stub.CreateDataset(
            pb.CreateDatasetRequest(dataset=pb.Dataset(display_name="x")), metadata=annotator.md
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    parent = env.dataset()
    with pytest.raises(grpc.RpcError) as err:
        env.stub.UploadItem(upload_messages(parent, "a.png", smooth_image(1)), metadata=annotator.md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert env.stub.ListItems(pb.ListItemsRequest(parent=parent), metadata=annotator.md).items == []


def test_upload_png_reads_back_and_publishes_item_ingested(env: Any) -> None:
    """A PNG becomes an image item with the right size, metadata and bytes, and ItemIngested is on the bus."""
    parent = env.dataset()
    data = smooth_image(1, size=(300, 200))
    response = env.upload(parent, "cat.png", data, chunk=1000, meta={"weather": "rain"})
    item = response.item
    assert not response.duplicate
    assert item.name.startswith(parent + "/items/")
    assert (item.media_type, item.width, item.height) == (common_pb2.MEDIA_TYPE_IMAGE, 300, 200)
    assert (item.content_type, item.size_bytes, item.file_name) == ("image/png", len(data), "cat.png")
    assert len(item.perceptual_hash) == 16
    assert item.near_duplicate_of == ""
    assert dict(item.metadata) == {"weather": "rain"}
    chunks = list(env.stub.ReadItemContent(pb.ReadItemContentRequest(name=item.name), metadata=env.acme.md))
    assert chunks[0].content_type == "image/png"
    assert b"".join(c.chunk for c in chunks) == data
    assert env.stub.GetItem(pb.GetItemRequest(name=item.name), metadata=env.acme.md).item == item
    (envelope,) = events(env.rt, 1)
    assert envelope.WhichOneof("payload") == "item_ingested"
    assert (envelope.tenant_id, envelope.resource_name, envelope.aggregate_version) == ("acme", item.name, 1)
    assert envelope.item_ingested.item.width == 300


def test_exact_duplicate_returns_existing_item(env: Any) -> None:
    """The same bytes again return the existing item with duplicate=true, create nothing, and emit
    ItemDuplicateDetected; the same request_id replays the first answer."""
    parent = env.dataset()
    data = smooth_image(2)
    first = env.upload(parent, "a.png", data, request_id="up-1").item
    replay = env.upload(parent, "a.png", data, request_id="up-1")
    assert (replay.item.name, replay.duplicate) == (first.name, False)
    again = env.upload(parent, "copy.png", data)
    assert again.duplicate
    assert again.item.name == first.name
    dataset = env.stub.GetDataset(pb.GetDatasetRequest(name=parent), metadata=env.acme.md).dataset
    assert dataset.item_count == 1
    envelopes = events(env.rt, 2)
    assert envelopes[1].WhichOneof("payload") == "item_duplicate_detected"
    assert envelopes[1].item_duplicate_detected.existing_item.name == first.name
    assert envelopes[1].item_duplicate_detected.file_name == "copy.png"


def test_near_duplicate_flagged_and_different_image_not(env: Any) -> None:
    """A slightly brightened copy is flagged as a near-duplicate (>= 0.85); a different image is not."""
    parent = env.dataset()
    original = env.upload(parent, "a.png", smooth_image(3)).item
    brighter = env.upload(parent, "b.png", smooth_image(3, brighten=12)).item
    other = env.upload(parent, "c.png", smooth_image(4)).item
    assert brighter.near_duplicate_of == original.name
    assert 0.85 <= brighter.near_duplicate_similarity <= 1.0
    assert other.near_duplicate_of == ""
    assert other.near_duplicate_similarity == 0.0
    dataset = env.stub.GetDataset(pb.GetDatasetRequest(name=parent), metadata=env.acme.md).dataset
    assert dataset.item_count == 3


def test_decompression_bomb_refused_leaving_nothing(env: Any) -> None:
    """A 20000x20000 1-bit PNG (48 KB on the wire) is DECOMPRESSION_BOMB; no item and no blob remain."""
    parent = env.dataset()
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    with pytest.raises(grpc.RpcError) as err:
        env.upload(parent, "bomb.png", buffer.getvalue(), chunk=64 * 1024)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(err.value) == "DECOMPRESSION_BOMB"
    assert env.stub.ListItems(pb.ListItemsRequest(parent=parent), metadata=env.acme.md).items == []
    assert env.blob_files() == []


def test_bad_upload_input(env: Any) -> None:
    """Bad file names, a missing header, unsupported bytes and bad metadata are INVALID_ARGUMENT
    with a reason, and leave no new item or blob."""
    parent = env.dataset()
    kept = env.upload(parent, "kept.png", smooth_image(8)).item
    assert len(env.blob_files()) == 1
    png = smooth_image(5)
    for name in ("", "../../etc/passwd", "a/b.png", "a\\b.png", "x" * 256, "nul\x00.png", "..png"):
        with pytest.raises(grpc.RpcError) as err:
            env.upload(parent, name, png)
        assert reason_of(err.value) == "BAD_FILE_NAME", name
    with pytest.raises(grpc.RpcError) as err:
        env.stub.UploadItem(iter([pb.UploadItemRequest(chunk=png)]), metadata=env.acme.md)
    assert reason_of(err.value) == "HEADER_REQUIRED"
    with pytest.raises(grpc.RpcError) as err:
        env.upload(parent, "doc.pdf", b"%PDF-1.7 this is no image")
    assert reason_of(err.value) == "UNSUPPORTED_MEDIA_TYPE"
    with pytest.raises(grpc.RpcError) as err:
        env.upload(parent, "a.png", png, meta={"big": "x" * 70_000})
    assert reason_of(err.value) == "METADATA_TOO_LARGE"
    with pytest.raises(grpc.RpcError) as err:
        env.upload(parent, "a.png", png * 2000)
    assert reason_of(err.value) == "CONTENT_TOO_LARGE"
    items = env.stub.ListItems(pb.ListItemsRequest(parent=parent), metadata=env.acme.md).items
    assert [i.name for i in items] == [kept.name]
    assert len(env.blob_files()) == 1


def test_text_upload_and_text_records(env: Any) -> None:
    """A UTF-8 .txt upload is a text item; CreateTextItems dedupes by content and streams text back."""
    parent = env.dataset()
    text_item = env.upload(parent, "note.txt", "bonjour é".encode()).item
    assert (text_item.media_type, text_item.text) == (common_pb2.MEDIA_TYPE_TEXT, "bonjour é")
    meta = struct_pb2.Struct()
    meta.update({"lang": "en"})
    response = env.stub.CreateTextItems(
        pb.CreateTextItemsRequest(
            parent=parent,
            records=[
                pb.TextRecord(text="one", metadata=meta),
                pb.TextRecord(text="two"),
                pb.TextRecord(text="one"),
                pb.TextRecord(text="bonjour é"),
            ],
        ),
        metadata=env.acme.md,
    )
    assert [i.text for i in response.items] == ["one", "two"]
    assert response.duplicate_count == 2
    assert dict(response.items[0].metadata) == {"lang": "en"}
    chunks = list(
        env.stub.ReadItemContent(pb.ReadItemContentRequest(name=response.items[1].name), metadata=env.acme.md)
    )
    assert chunks[0].content_type.startswith("text/plain")
    assert b"".join(c.chunk for c in chunks) == b"two"
    listed = env.stub.ListItems(pb.ListItemsRequest(parent=parent, page_size=2), metadata=env.acme.md)
    rest = env.stub.ListItems(
        pb.ListItemsRequest(parent=parent, page_token=listed.next_page_token), metadata=env.acme.md
    )
    assert [i.name for i in [*listed.items, *rest.items]] == [text_item.name] + [
        i.name for i in response.items
    ]
    for records, reason in (
        ([pb.TextRecord(text="ok"), pb.TextRecord(text="")], "TEXT_EMPTY"),
        ([], "RECORDS_EMPTY"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            env.stub.CreateTextItems(
                pb.CreateTextItemsRequest(parent=parent, records=records), metadata=env.acme.md
            )
        assert reason_of(err.value) == reason
    dataset = env.stub.GetDataset(pb.GetDatasetRequest(name=parent), metadata=env.acme.md).dataset
    assert dataset.item_count == 3


def test_other_organization_gets_not_found_everywhere(env: Any) -> None:
    """Every RPC on another organization's dataset or item is NOT_FOUND and changes nothing."""
    parent = env.dataset()
    item = env.upload(parent, "a.png", smooth_image(6)).item
    md = env.other.md
    calls = [
        lambda: env.stub.GetDataset(pb.GetDatasetRequest(name=parent), metadata=md),
        lambda: env.stub.GetItem(pb.GetItemRequest(name=item.name), metadata=md),
        lambda: env.stub.ListItems(pb.ListItemsRequest(parent=parent), metadata=md),
        lambda: list(env.stub.ReadItemContent(pb.ReadItemContentRequest(name=item.name), metadata=md)),
        lambda: env.stub.UploadItem(upload_messages(parent, "b.png", smooth_image(7)), metadata=md),
        lambda: env.stub.CreateTextItems(
            pb.CreateTextItemsRequest(parent=parent, records=[pb.TextRecord(text="x")]), metadata=md
        ),
        lambda: env.stub.ImportManifest(
            pb.ImportManifestRequest(parent=parent, manifest=b'{"text": "x"}'), metadata=md
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert env.stub.ListDatasets(pb.ListDatasetsRequest(), metadata=md).datasets == []
    assert (
        env.stub.GetDataset(pb.GetDatasetRequest(name=parent), metadata=env.acme.md).dataset.item_count == 1
    )
