"""ImportManifest over real gRPC against a local HTTP server: all-or-nothing rows and the SSRF guard."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from annocloud.common.v1 import common_pb2
from annocloud.ingestion.v1 import ingestion_pb2 as pb
from annocloud.ingestion.v1 import ingestion_pb2_grpc
from annocloud_server.ingestion.component import create_component
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).resize(
        (64, 48), Image.Resampling.BICUBIC
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class Site:
    """A tiny HTTP server on 127.0.0.1:0 whose routes are (status, headers, body) triples."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.hits.append(self.path)
                status, headers, body = site.routes.get(self.path, (404, {}, b"no"))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    allowed, forbidden = Site(), Site()
    yield allowed, forbidden
    allowed.close()
    forbidden.close()


def reason_and_row(err: grpc.RpcError) -> tuple[str, str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return str(info.reason), str(info.metadata.get("row", ""))


@pytest.fixture
def env(
    sites: tuple[Site, Site],
    start_services: Callable[..., Any],
    channel_to: Callable[..., Any],
    caller: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    allowed, forbidden = sites
    # Only the first site's exact ip:port is allowed; the second site on the same IP is not.
    monkeypatch.setenv("ANNOCLOUD_INGEST_ALLOWED_PRIVATE_HOSTS", f"127.0.0.1:{allowed.port}")
    monkeypatch.setenv("ANNOCLOUD_MAX_UPLOAD_BYTES", "200000")
    runtime = start_services([create_component])
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel_to(runtime))
    acme = caller(org="acme", subject="user:mgr")
    allowed.routes.update(
        {
            "/a.png": (200, {"Content-Type": "image/png"}, png(1)),
            "/b.png": (200, {"Content-Type": "image/png"}, png(2)),
            "/note.txt": (200, {"Content-Type": "text/plain"}, b"from the web"),
            "/hop": (302, {"Location": "/b.png"}, b""),
            "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
            "/to-other-port": (302, {"Location": forbidden.url("/c.png")}, b""),
            "/to-decimal-loopback": (302, {"Location": "http://2130706433/"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/huge.png": (200, {}, b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000),
            "/page.html": (200, {"Content-Type": "text/html"}, b"<html></html>"),
        }
    )
    forbidden.routes["/c.png"] = (200, {}, png(3))
    dataset = stub.CreateDataset(
        pb.CreateDatasetRequest(dataset=pb.Dataset(display_name="web")), metadata=acme.md
    )

    class Env:
        rt = runtime
        parent = dataset.dataset.name

        def manifest(self, *rows: str, request_id: str = "") -> pb.ImportManifestResponse:
            body = "\n".join(rows).encode()
            request = pb.ImportManifestRequest(parent=self.parent, manifest=body, request_id=request_id)
            return stub.ImportManifest(request, metadata=acme.md)

        def items(self) -> list[pb.Item]:
            return list(stub.ListItems(pb.ListItemsRequest(parent=self.parent), metadata=acme.md).items)

        def blob_files(self) -> list[Path]:
            data_dir = Path(runtime.components[0].db.url.split("///", 1)[1]).parent
            return [p for p in (data_dir / "blobs" / "sha256").rglob("*") if p.is_file()]

    env = Env()
    env.allowed, env.forbidden = allowed, forbidden  # type: ignore[attr-defined]
    return env


def test_manifest_imports_text_urls_and_redirects(env: Any) -> None:
    """Text rows, URL rows, a same-origin redirect and a duplicate row import in order, once."""
    site = env.allowed
    response = env.manifest(
        '{"text": "hello", "metadata": {"lang": "en"}}',
        f'{{"url": "{site.url("/a.png")}", "file_name": "first.png"}}',
        f'{{"url": "{site.url("/hop")}"}}',
        f'{{"url": "{site.url("/note.txt")}"}}',
        '{"text": "hello"}',
        request_id="m-1",
    )
    assert response.duplicate_count == 1
    text, first, hopped, note = response.items
    assert (text.text, dict(text.metadata)) == ("hello", {"lang": "en"})
    assert (first.file_name, first.media_type, first.width, first.height) == (
        "first.png",
        common_pb2.MEDIA_TYPE_IMAGE,
        64,
        48,
    )
    assert first.source_uri == site.url("/a.png")
    assert (hopped.file_name, hopped.content_type) == ("b.png", "image/png")
    assert (note.media_type, note.text) == (common_pb2.MEDIA_TYPE_TEXT, "from the web")
    replay = env.manifest('{"text": "ignored"}', request_id="m-1")
    assert [i.name for i in replay.items] == [i.name for i in response.items]
    assert replay.duplicate_count == 1
    assert len(env.items()) == 4


def test_bad_row_three_creates_nothing(env: Any) -> None:
    """A bad row 3 rejects the whole manifest with 'row 3' and leaves no item and no fetched blob."""
    site = env.allowed
    for bad in (
        '{"text": NaN}',
        '["not", "an", "object"]',
        '{"text": "x", "extra": 1}',
        '{"url": "x", "text": "y"}',
        '{"url": "' + site.url("/page.html") + '"}',
    ):
        with pytest.raises(grpc.RpcError) as err:
            env.manifest('{"text": "one"}', f'{{"url": "{site.url("/a.png")}"}}', bad, '{"text": "four"}')
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("row 3: ")
        assert reason_and_row(err.value)[1] == "3"
    assert env.items() == []
    assert env.blob_files() == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "file:///etc/passwd",
        "ALLOWED/to-metadata",
        "ALLOWED/to-other-port",
        "ALLOWED/to-decimal-loopback",
        "FORBIDDEN/c.png",
    ],
)
def test_ssrf_targets_are_refused(env: Any, target: str) -> None:
    """Loopback (also in decimal), metadata, non-http schemes, a port not on the allow-list, and
    redirects from the allowed site to any of those are URL_REFUSED; the forbidden site is never hit."""
    url = target.replace("ALLOWED", env.allowed.url("")).replace("FORBIDDEN", env.forbidden.url(""))
    with pytest.raises(grpc.RpcError) as err:
        env.manifest('{"text": "fine"}', f'{{"url": "{url}"}}')
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_and_row(err.value) == ("URL_REFUSED", "2")
    assert err.value.details().startswith("row 2: ")
    assert env.forbidden.hits == []
    assert env.items() == []


@pytest.mark.parametrize("path", ["/missing", "/loop", "/huge.png"])
def test_fetch_failures(env: Any, path: str) -> None:
    """404s, redirect loops (more than 3 hops) and bodies over the size limit are URL_FETCH_FAILED
    or CONTENT_TOO_LARGE, reported by row, and nothing is created."""
    with pytest.raises(grpc.RpcError) as err:
        env.manifest(f'{{"url": "{env.allowed.url(path)}"}}')
    reason, row = reason_and_row(err.value)
    assert row == "1"
    assert reason in ("URL_FETCH_FAILED", "CONTENT_TOO_LARGE")
    if path == "/loop":
        assert env.allowed.hits.count("/loop") == 4
    assert env.items() == []
    assert env.blob_files() == []
