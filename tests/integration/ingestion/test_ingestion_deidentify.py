"""De-identification at ingest over real gRPC: the real IngestionService, a FAKE ModelAssistService.

The fake stands in for modelassist + Triton only: it returns fixed face/plate boxes or fails the
way an unreachable Triton would; everything on the ingestion side is the real service.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
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
from annocloud.modelassist.v1 import modelassist_pb2, modelassist_pb2_grpc
from annocloud_server.common.auth import ANNOTATOR
from annocloud_server.common.component import Component, ComponentContext
from annocloud_server.common.db import Database, make_base
from annocloud_server.common.errors import AnnocloudError, FailedPrecondition, Unavailable
from annocloud_server.common.events import TOPIC_INGESTION, inbox_table, outbox_table
from annocloud_server.common.server import ServiceRegistration
from annocloud_server.gateway.apikeys import ApiKeyStore
from annocloud_server.gateway.app import create_app
from annocloud_server.gateway.settings import GatewaySettings
from annocloud_server.ingestion.component import create_component
from fastapi.testclient import TestClient
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from numpy.typing import NDArray
from PIL import Image

FACE = common_pb2.SENSITIVE_KIND_FACE
PLATE = common_pb2.SENSITIVE_KIND_PLATE
FIXED = [
    common_pb2.SensitiveRegion(
        kind=FACE, x=20, y=10, width=30, height=30, score=0.9, source="model:face_detector/3"
    ),
    common_pb2.SensitiveRegion(
        kind=PLATE, x=80, y=60, width=30, height=12, score=0.8, source="model:plate_detector/1"
    ),
]


class FakeModelAssist(modelassist_pb2_grpc.ModelAssistServiceServicer):
    """A fake DetectSensitiveRegions: ``FIXED`` regions, or raises ``fail_with`` (the errors the
    real servicer raises when Triton is missing or down)."""

    def __init__(self) -> None:
        self.fail_with: AnnocloudError | None = None
        self.calls: list[tuple[bytes, dict[str, Any]]] = []

    def DetectSensitiveRegions(
        self, request: modelassist_pb2.DetectSensitiveRegionsRequest, context: grpc.ServicerContext
    ) -> modelassist_pb2.DetectSensitiveRegionsResponse:
        self.calls.append((request.image, dict(context.invocation_metadata())))
        if self.fail_with is not None:
            raise self.fail_with
        return modelassist_pb2.DetectSensitiveRegionsResponse(regions=FIXED)


def fake_modelassist_factory(fake: FakeModelAssist) -> Callable[[ComponentContext], Component]:
    def create(ctx: ComponentContext) -> Component:
        base = make_base()
        db = Database(ctx.database_url)
        outbox, inbox = outbox_table(base.metadata), inbox_table(base.metadata)
        db.create_tables(base.metadata)

        def add(server: grpc.Server) -> None:
            modelassist_pb2_grpc.add_ModelAssistServiceServicer_to_server(fake, server)  # type: ignore[no-untyped-call]

        return Component(
            name="fake_modelassist",
            db=db,
            outbox=outbox,
            inbox=inbox,
            registrations=[ServiceRegistration("annocloud.modelassist.v1.ModelAssistService", add)],
        )

    # The runtime names a component's database after its package (``<package>.component``).
    create.__module__ = "fake_modelassist.component"
    return create


def noisy_png(seed: int = 1, size: tuple[int, int] = (120, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> NDArray[np.float64]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def upload_messages(parent: str, file_name: str, data: bytes) -> Iterator[pb.UploadItemRequest]:
    yield pb.UploadItemRequest(header=pb.UploadItemHeader(parent=parent, file_name=file_name))
    for start in range(0, len(data), 4096):
        yield pb.UploadItemRequest(chunk=data[start : start + 4096])


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return info


class Site:
    """One file served over HTTP on 127.0.0.1:0 (manifest URLs)."""

    def __init__(self, body: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    served = Site(noisy_png(7))
    yield served
    served.close()


@pytest.fixture
def env(
    site: Site,
    start_services: Callable[..., Any],
    channel_to: Callable[..., Any],
    caller: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    monkeypatch.setenv("ANNOCLOUD_INGEST_ALLOWED_PRIVATE_HOSTS", f"127.0.0.1:{site.port}")
    fake = FakeModelAssist()
    runtime = start_services([create_component, fake_modelassist_factory(fake)])

    class Env:
        rt = runtime
        assist = fake
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel_to(runtime))
        acme = caller(org="acme", subject="user:mgr")
        reader = caller(org="acme", subject="user:ann", roles=(ANNOTATOR,))
        other = caller(org="globex", subject="user:mallory")
        url = f"http://127.0.0.1:{site.port}/street.png"

        def dataset(self, deidentify: bool = True) -> str:
            request = pb.CreateDatasetRequest(
                dataset=pb.Dataset(display_name="Streets", deidentify=deidentify)
            )
            return str(self.stub.CreateDataset(request, metadata=self.acme.md).dataset.name)

        def upload(self, parent: str, data: bytes, file_name: str = "street.png") -> pb.UploadItemResponse:
            return self.stub.UploadItem(upload_messages(parent, file_name, data), metadata=self.acme.md)

        def content(self, name: str) -> bytes:
            request = pb.ReadItemContentRequest(name=name)
            return b"".join(r.chunk for r in self.stub.ReadItemContent(request, metadata=self.acme.md))

        def update(self, name: str, regions: list[common_pb2.SensitiveRegion], md: Any = None) -> Any:
            request = pb.UpdateSensitiveRegionsRequest(item=name, regions=regions)
            return self.stub.UpdateSensitiveRegions(request, metadata=md or self.acme.md)

        def blob_files(self, folder: str) -> list[Path]:
            data_dir = Path(runtime.components[0].db.url.split("///", 1)[1]).parent
            return [p for p in (data_dir / "blobs" / folder).rglob("*") if p.is_file()]

        def items(self, parent: str) -> list[pb.Item]:
            request = pb.ListItemsRequest(parent=parent)
            return list(self.stub.ListItems(request, metadata=self.acme.md).items)

    return Env()


def ingestion_events(runtime: Any) -> list[events_pb2.EventEnvelope]:
    runtime.wait_idle()
    records = runtime.bus.subscribe("test-reader", [TOPIC_INGESTION]).poll(100, 1.0)
    return [events_pb2.EventEnvelope.FromString(r.value) for r in records]


def box(region: common_pb2.SensitiveRegion) -> tuple[slice, slice]:
    """The pixels strictly inside a region (rows, columns)."""
    return (
        slice(int(region.y), int(region.y + region.height)),
        slice(int(region.x), int(region.x + region.width)),
    )


def test_deidentify_flag_is_stored_and_returned(env: Any) -> None:
    """CreateDataset keeps `deidentify`; GetDataset and ListDatasets return it."""
    name = env.dataset(deidentify=True)
    plain = env.dataset(deidentify=False)
    got = env.stub.GetDataset(pb.GetDatasetRequest(name=name), metadata=env.acme.md).dataset
    listed = env.stub.ListDatasets(pb.ListDatasetsRequest(), metadata=env.acme.md).datasets
    assert got.deidentify is True
    assert {d.name: d.deidentify for d in listed} == {name: True, plain: False}


def test_upload_stores_blurred_media_and_keeps_the_original_private(env: Any) -> None:
    """The stored media is the blur (content hash, size), regions are blurred, outside pixels are
    untouched, the caller's principal reached modelassist, and the original is not content-addressed."""
    original = noisy_png()
    item = env.upload(env.dataset(), original).item
    stored = env.content(item.name)
    assert item.blurred_regions == 2
    assert item.content_sha256 == hashlib.sha256(stored).hexdigest() != hashlib.sha256(original).hexdigest()
    assert item.size_bytes == len(stored)
    assert Image.open(io.BytesIO(stored)).format == "PNG"
    before, after = pixels(original), pixels(stored)
    for region in FIXED:
        assert after[box(region)].var() < before[box(region)].var() / 20
    assert np.array_equal(after[:, :14], before[:, :14])  # left of the grown face box
    ((image, metadata),) = env.assist.calls
    assert image == original
    assert any(k.startswith("x-annocloud-principal-") for k in metadata)
    assert [p.name for p in env.blob_files("originals")] == [item.name.rsplit("/", 1)[1]]
    assert hashlib.sha256(original).hexdigest() not in {p.name for p in env.blob_files("sha256")}


def test_regions_are_listed_for_readers_and_hidden_from_other_organizations(env: Any) -> None:
    """ListSensitiveRegions gives readers the detector's boxes; another organization gets NOT_FOUND."""
    item = env.upload(env.dataset(), noisy_png()).item
    request = pb.ListSensitiveRegionsRequest(item=item.name)
    regions = env.stub.ListSensitiveRegions(request, metadata=env.reader.md).regions
    assert [(r.kind, r.x, r.width, r.score, r.source) for r in regions] == [
        (r.kind, r.x, r.width, r.score, r.source) for r in FIXED
    ]
    with pytest.raises(grpc.RpcError) as err:
        env.stub.ListSensitiveRegions(request, metadata=env.other.md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_update_reblurs_from_the_original(env: Any) -> None:
    """Dropping a region restores its original pixels, a person's new region is blurred (source =
    caller, score 1), the item points at the new blur and the old blur's blob is removed."""
    original = noisy_png()
    item = env.upload(env.dataset(), original).item
    old_blob = item.content_sha256
    drawn = common_pb2.SensitiveRegion(kind=common_pb2.SENSITIVE_KIND_OTHER, x=60, y=10, width=20, height=20)
    response = env.update(item.name, [FIXED[0], drawn])
    stored = env.content(item.name)
    before, after = pixels(original), pixels(stored)
    assert np.array_equal(after[box(FIXED[1])], before[box(FIXED[1])])
    assert after[box(drawn)].var() < before[box(drawn)].var() / 20
    assert after[box(FIXED[0])].var() < before[box(FIXED[0])].var() / 20
    assert response.item.content_sha256 == hashlib.sha256(stored).hexdigest() != old_blob
    assert response.item.blurred_regions == 2
    assert (response.regions[1].source, response.regions[1].score) == ("user:mgr", 1.0)
    assert response.regions[0].source == "model:face_detector/3"
    assert old_blob not in {p.name for p in env.blob_files("sha256")}
    listed = env.stub.ListSensitiveRegions(
        pb.ListSensitiveRegionsRequest(item=item.name), metadata=env.acme.md
    )
    assert list(listed.regions) == list(response.regions)


def test_same_upload_twice_is_a_duplicate_without_a_second_detection(env: Any) -> None:
    """Duplicates are found on the uploaded bytes' hash, before modelassist is asked, and leave no blob."""
    parent = env.dataset()
    first = env.upload(parent, noisy_png())
    second = env.upload(parent, noisy_png(), file_name="again.png")
    env.update(first.item.name, [FIXED[0]])  # the stored blur changes; the original does not
    third = env.upload(parent, noisy_png(), file_name="third.png")
    assert (second.duplicate, third.duplicate) == (True, True)
    assert second.item.name == third.item.name == first.item.name
    assert len(env.assist.calls) == 1
    assert len(env.blob_files("originals")) == 1
    assert len(env.items(parent)) == 1


def test_manifest_urls_are_blurred_too(env: Any) -> None:
    """An ImportManifest URL row into a de-identified dataset is stored blurred like an upload."""
    parent = env.dataset()
    manifest = json.dumps({"url": env.url}).encode() + b"\n"
    response = env.stub.ImportManifest(
        pb.ImportManifestRequest(parent=parent, manifest=manifest), metadata=env.acme.md
    )
    (item,) = response.items
    assert item.blurred_regions == 2
    assert hashlib.sha256(env.content(item.name)).hexdigest() == item.content_sha256
    assert item.content_sha256 != hashlib.sha256(noisy_png(7)).hexdigest()


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (Unavailable("Triton did not answer"), grpc.StatusCode.UNAVAILABLE),
        (FailedPrecondition("no Triton configured"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_detector_failure_stores_nothing(
    env: Any, failure: AnnocloudError, expected: grpc.StatusCode
) -> None:
    """Modelassist failing fails the upload and the manifest: no item, no blob, no event."""
    parent = env.dataset()
    env.assist.fail_with = failure
    with pytest.raises(grpc.RpcError) as err:
        env.upload(parent, noisy_png())
    assert err.value.code() == expected
    assert "nothing was stored" in (err.value.details() or "")
    manifest = json.dumps({"url": env.url}).encode() + b"\n"
    with pytest.raises(grpc.RpcError) as manifest_err:
        env.stub.ImportManifest(
            pb.ImportManifestRequest(parent=parent, manifest=manifest), metadata=env.acme.md
        )
    assert manifest_err.value.code() == expected
    assert error_info(manifest_err.value).metadata["row"] == "1"
    assert env.items(parent) == []
    assert env.blob_files("originals") == []
    assert env.blob_files("sha256") == []
    assert ingestion_events(env.rt) == []
    got = env.stub.GetDataset(pb.GetDatasetRequest(name=parent), metadata=env.acme.md).dataset
    assert got.item_count == 0


@pytest.mark.parametrize(
    ("region", "field"),
    [
        ({"kind": FACE, "x": 1, "y": 1, "width": 0, "height": 5}, "regions[1].width"),
        ({"kind": FACE, "x": float("nan"), "y": 1, "width": 5, "height": 5}, "regions[1].x"),
        ({"kind": FACE, "x": 100, "y": 1, "width": 50, "height": 5}, "regions[1].width"),
        ({"kind": FACE, "x": 1, "y": 75, "width": 5, "height": 10}, "regions[1].height"),
        ({"x": 1, "y": 1, "width": 5, "height": 5}, "regions[1].kind"),
        ({"kind": FACE, "x": 1, "y": 1, "width": 5, "height": 5, "score": 2}, "regions[1].score"),
    ],
)
def test_bad_regions_are_refused_naming_the_field(env: Any, region: dict[str, Any], field: str) -> None:
    """A bad region is INVALID_ARGUMENT naming its field, and the stored media is unchanged."""
    item = env.upload(env.dataset(), noisy_png()).item
    with pytest.raises(grpc.RpcError) as err:
        env.update(item.name, [FIXED[0], common_pb2.SensitiveRegion(**region)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.value.details() or "")
    assert error_info(err.value).metadata["field"] == field
    assert env.stub.GetItem(pb.GetItemRequest(name=item.name), metadata=env.acme.md).item == item


def test_too_many_regions_are_refused(env: Any) -> None:
    """More than 1000 regions is INVALID_ARGUMENT."""
    item = env.upload(env.dataset(), noisy_png()).item
    with pytest.raises(grpc.RpcError) as err:
        env.update(item.name, [FIXED[0]] * 1001)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_update_by_another_organization_or_a_reader_is_refused(env: Any) -> None:
    """Another organization gets NOT_FOUND even with a valid body; an annotator PERMISSION_DENIED."""
    item = env.upload(env.dataset(), noisy_png()).item
    with pytest.raises(grpc.RpcError) as err:
        env.update(item.name, [FIXED[0]], md=env.other.md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as denied:
        env.update(item.name, [FIXED[0]], md=env.reader.md)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert env.stub.GetItem(pb.GetItemRequest(name=item.name), metadata=env.acme.md).item == item


def test_plain_datasets_and_text_are_not_touched(env: Any) -> None:
    """Without `deidentify` the bytes are stored as sent and modelassist is not called; text in a
    de-identified dataset is stored as sent; neither can have its regions updated."""
    original = noisy_png()
    item = env.upload(env.dataset(deidentify=False), original).item
    text = env.upload(env.dataset(), b"a licence plate: AB-123", file_name="note.txt").item
    assert env.content(item.name) == original
    assert (item.blurred_regions, text.text, env.assist.calls) == (0, "a licence plate: AB-123", [])
    listed = env.stub.ListSensitiveRegions(
        pb.ListSensitiveRegionsRequest(item=item.name), metadata=env.acme.md
    )
    assert list(listed.regions) == []
    for name in (item.name, text.name):
        with pytest.raises(grpc.RpcError) as err:
            env.update(name, [FIXED[0]])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert env.blob_files("originals") == []


def test_gateway_routes_for_deidentified_items(env: Any, authenticator: Any, tmp_path: Path) -> None:
    """REST: POST /v1/datasets takes `deidentify`; GET/PUT sensitiveRegions work for the owner and
    are 404 for another organization, with or without a body."""
    keys = ApiKeyStore(tmp_path / "api_keys.json")
    channel = grpc.insecure_channel(env.rt.address)
    app = create_app(GatewaySettings(), channel=channel, authenticator=authenticator, api_keys=keys)
    owner_key = keys.create_key("acme", "user:mgr", ["admin"])
    other_key = keys.create_key("globex", "user:mallory", ["admin"])
    with TestClient(app, base_url="http://gw") as http:
        owner = {"Authorization": f"Bearer {owner_key}"}
        other = {"Authorization": f"Bearer {other_key}"}
        created = http.post(
            "/v1/datasets", json={"display_name": "Streets", "deidentify": True}, headers=owner
        )
        assert created.status_code == 200
        assert created.json()["deidentify"] is True
        dataset = created.json()["name"].split("/")[1]
        uploaded = http.post(
            f"/v1/datasets/{dataset}/items:upload",
            files={"file": ("s.png", noisy_png(), "image/png")},
            headers=owner,
        )
        item = uploaded.json()["item"]["name"].rsplit("/", 1)[1]
        path = f"/v1/datasets/{dataset}/items/{item}/sensitiveRegions"
        listed = http.get(path, headers=owner).json()["regions"]
        assert [r["kind"] for r in listed] == ["SENSITIVE_KIND_FACE", "SENSITIVE_KIND_PLATE"]
        body = {"regions": [{"kind": "SENSITIVE_KIND_FACE", "x": 5, "y": 5, "width": 20, "height": 20}]}
        updated = http.put(path, json=body, headers=owner)
        assert updated.status_code == 200
        assert updated.json()["item"]["blurred_regions"] == 1
        assert updated.json()["regions"][0]["source"] == "user:mgr"
        bad = http.put(
            path,
            json={"regions": [{"kind": "SENSITIVE_KIND_FACE", "x": 5, "y": 5, "width": 0, "height": 5}]},
            headers=owner,
        )
        assert bad.status_code == 400
        assert "regions[0].width" in bad.text
        assert http.put(path, headers=owner).status_code == 400
        assert http.get(path, headers=other).status_code == 404
        assert http.put(path, json=body, headers=other).status_code == 404
        assert http.put(path, headers=other).status_code == 404
    channel.close()
