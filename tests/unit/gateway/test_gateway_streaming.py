"""Streaming: multipart uploads in chunks, item content and export artifacts as streamed bodies."""

from __future__ import annotations

ARTIFACT = b"PK\x03\x04" + bytes(range(256)) * 40  # what FakeExport streams


def test_upload_is_streamed_in_chunks(small_gw):
    """A 5000-byte file reaches UploadItem as a header then 1024-byte chunks, metadata included."""
    data = bytes(range(250)) * 20
    files = {"file": ("cat.png", data, "image/png")}
    form = {"metadata": '{"weather": "rain", "n": 2}', "request_id": "u1"}
    response = small_gw.client.post(
        "/v1/datasets/d1/items:upload", files=files, data=form, headers=small_gw.auth()
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duplicate"] is False
    assert body["item"]["size_bytes"] == 5000
    assert body["item"]["metadata"] == {"weather": "rain", "n": 2}
    assert small_gw.calls.upload_chunks == [1024, 1024, 1024, 1024, 904]
    header, principal = small_gw.calls.last("UploadItem")
    assert header.header.parent == "datasets/d1"
    assert header.header.file_name == "cat.png"
    assert header.header.request_id == "u1"
    assert principal.organization_id == "acme"


def test_upload_bad_metadata_is_400(gw):
    """metadata must be a JSON object."""
    files = {"file": ("a.txt", b"abc", "text/plain")}
    for metadata in ("{oops", "[1]"):
        response = gw.client.post(
            "/v1/datasets/d1/items:upload", files=files, data={"metadata": metadata}, headers=gw.auth()
        )
        assert response.status_code == 400
        assert response.json()["error"]["reason"] == "BAD_METADATA"
    assert gw.calls.log == []


def test_upload_without_file_is_400(gw):
    """The file part is required."""
    response = gw.client.post("/v1/datasets/d1/items:upload", data={"request_id": "x"}, headers=gw.auth())
    assert response.status_code == 400


def test_item_content_streams_with_content_type(gw):
    """Item bytes stream back with the content type of the first chunk."""
    response = gw.client.get("/v1/datasets/d1/items/i1/content", headers=gw.auth())
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == b"\x89PNG-rest"


def test_item_content_not_found_is_404(gw):
    """An error on the first message becomes a proper 404, not a broken stream."""
    response = gw.client.get("/v1/datasets/d1/items/missing/content", headers=gw.auth())
    assert response.status_code == 404
    assert response.json()["error"]["reason"] == "THING_NOT_FOUND"


def test_artifact_streams_as_zip(gw):
    """The artifact arrives whole as application/zip with a Content-Disposition."""
    with gw.client.stream("GET", "/v1/projects/p1/exports/e1/artifact", headers=gw.auth()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["content-disposition"] == 'attachment; filename="p1-e1.zip"'
        chunks = list(response.iter_bytes())
    assert b"".join(chunks) == ARTIFACT


def test_artifact_errors_map(gw):
    """A missing export → 404 with the service's reason."""
    response = gw.client.get("/v1/projects/p1/exports/missing/artifact", headers=gw.auth())
    assert response.status_code == 404
    assert response.json()["error"]["reason"] == "THING_NOT_FOUND"
