"""Pure ingestion rules: file names, metadata, manifests, hash bands."""

from __future__ import annotations

import json
import random

import pytest
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.ingestion import domain


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "a" * 256,
        "../etc/passwd",
        "dir/file.png",
        "dir\\file.png",
        "a..b.png",
        "nul\x00.png",
        "tab\t.png",
        "..",
    ],
)
def test_bad_file_names_are_refused(name: str) -> None:
    """Empty, over-long, path-like, dot-dot and control-character names get BAD_FILE_NAME."""
    with pytest.raises(InvalidArgument) as err:
        domain.validate_file_name(name)
    assert err.value.reason == "BAD_FILE_NAME"


def test_plain_file_names_pass() -> None:
    """Ordinary names, including unicode and 255 characters, are kept as they are."""
    for name in ("cat.png", "été 2024.jpg", "x" * 255):
        assert domain.validate_file_name(name) == name


def test_display_name_rules() -> None:
    """display_name is required and at most 200 characters."""
    assert domain.validate_display_name(" Cars ") == "Cars"
    with pytest.raises(InvalidArgument):
        domain.validate_display_name("  ")
    with pytest.raises(InvalidArgument) as err:
        domain.validate_display_name("x" * 201)
    assert err.value.reason == "DISPLAY_NAME_TOO_LONG"


def test_metadata_must_be_a_small_object() -> None:
    """Metadata is a JSON object of at most 64 KiB without NaN."""
    assert json.loads(domain.metadata_json({"weather": "rain", "n": 2})) == {"weather": "rain", "n": 2}
    with pytest.raises(InvalidArgument):
        domain.metadata_json([1, 2])
    with pytest.raises(InvalidArgument):
        domain.metadata_json({"x": float("nan")})
    with pytest.raises(InvalidArgument) as err:
        domain.metadata_json({"big": "x" * (64 * 1024)})
    assert err.value.reason == "METADATA_TOO_LARGE"


def _manifest(*lines: str) -> bytes:
    return "\n".join(lines).encode()


def test_manifest_parses_text_and_url_rows() -> None:
    """Valid rows come back numbered by line, blank lines skipped."""
    rows = domain.parse_manifest(
        _manifest(
            '{"text": "hello", "metadata": {"lang": "en"}}',
            "",
            '{"url": "https://example.com/a.png", "file_name": "a.png"}',
        )
    )
    assert [r.row for r in rows] == [1, 3]
    assert rows[0].text == "hello"
    assert json.loads(rows[0].metadata_json) == {"lang": "en"}
    assert rows[1].url == "https://example.com/a.png"
    assert rows[1].file_name == "a.png"


@pytest.mark.parametrize(
    "bad_row",
    [
        "[1, 2]",
        '"just a string"',
        "{not json",
        '{"text": NaN}',
        '{"text": "a", "metadata": {"x": Infinity}}',
        '{"text": "a", "colour": "red"}',
        '{"text": "a", "url": "https://example.com/"}',
        '{"metadata": {}}',
        '{"text": ""}',
        '{"text": 5}',
        '{"url": 5}',
        '{"text": "a", "metadata": [1]}',
        '{"text": "a", "file_name": "../x.txt"}',
        '{"text": "a", "text": "b"}',
    ],
)
def test_manifest_bad_row_reports_its_number(bad_row: str) -> None:
    """Every kind of bad row is MANIFEST_ROW_INVALID with 'row 3' and ErrorInfo row=3."""
    with pytest.raises(InvalidArgument) as err:
        domain.parse_manifest(_manifest('{"text": "a"}', '{"text": "b"}', bad_row, '{"text": "d"}'))
    assert err.value.reason == "MANIFEST_ROW_INVALID"
    assert err.value.message.startswith("row 3: ")
    assert err.value.metadata == {"row": "3"}


def test_manifest_limits() -> None:
    """Empty manifests, more than 10,000 rows and more than 32 MiB are refused."""
    with pytest.raises(InvalidArgument) as err:
        domain.parse_manifest(b"\n\n")
    assert err.value.reason == "MANIFEST_EMPTY"
    with pytest.raises(InvalidArgument) as err:
        domain.parse_manifest(b'{"text":"a"}\n' * 10_001)
    assert err.value.reason == "MANIFEST_TOO_MANY_ROWS"
    with pytest.raises(InvalidArgument) as err:
        domain.parse_manifest(b" " * (32 * 1024 * 1024 + 1))
    assert err.value.reason == "MANIFEST_TOO_LARGE"


def test_invalid_utf8_row() -> None:
    """A row that is not UTF-8 is reported by number."""
    with pytest.raises(InvalidArgument) as err:
        domain.parse_manifest(b'{"text": "a"}\n{"text": "\xff"}')
    assert err.value.metadata == {"row": "2"}


def test_bands_cover_64_bits_and_catch_every_near_hash() -> None:
    """Any two hashes within hamming 9 meet in the probe keys (pigeonhole), so banding finds them."""
    assert sum(domain.BAND_WIDTHS) == 64
    rng = random.Random(7)
    for _ in range(2000):
        a = rng.getrandbits(64)
        flips = rng.sample(range(64), rng.randint(0, 9))
        b = a
        for bit in flips:
            b ^= 1 << bit
        assert set(domain.band_keys(b)) & set(domain.probe_keys(a))


def test_most_similar_picks_closest_within_threshold() -> None:
    """The closest candidate within hamming 9 wins (earliest on ties); farther ones are ignored."""
    target = 0
    candidates = [("far", (1 << 10) - 1), ("near5", 0b11111), ("near2a", 0b11), ("near2b", 0b1100)]
    assert domain.most_similar(target, candidates) == ("near2a", pytest.approx(1 - 2 / 64))
    assert domain.most_similar(target, [("far", (1 << 10) - 1)]) is None
    assert domain.similarity(0, 0b111111111) == pytest.approx(0.859375)
