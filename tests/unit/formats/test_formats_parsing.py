"""Strict JSON, streaming JSONL and defused XML refuse hostile documents with JSON_* / XML_* reasons."""

from __future__ import annotations

import io
import json
import random

import pytest
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.formats.parsing import (
    LineError,
    StrictJsonReader,
    iter_jsonl,
    iterparse_xml,
    json_depth,
    load_json,
    loads_strict,
    parse_xml,
)


@pytest.mark.parametrize("text", ['{"x": NaN}', "[Infinity]", '{"a": [-Infinity]}'])
def test_non_finite_numbers_are_refused(text: str) -> None:
    """NaN and Infinity are not JSON: JSON_NON_FINITE."""
    with pytest.raises(InvalidArgument) as err:
        loads_strict(text.encode())
    assert err.value.reason == "JSON_NON_FINITE"


def test_nesting_is_capped_at_64_and_strings_do_not_count() -> None:
    """64 levels parse, 65 are JSON_TOO_DEEP; brackets inside strings are not nesting."""
    assert loads_strict(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(InvalidArgument) as err:
        loads_strict(b"[" * 65 + b"]" * 65)
    assert err.value.reason == "JSON_TOO_DEEP"
    assert json_depth(b'{"a": "[[[[[[\\"[[["}') == 1
    with pytest.raises(InvalidArgument) as err:
        loads_strict(b"[" * 100_000)
    assert err.value.reason == "JSON_TOO_DEEP"


def test_oversize_and_malformed_documents() -> None:
    """A document over max_bytes is JSON_TOO_LARGE without being parsed; broken JSON is JSON_INVALID."""
    with pytest.raises(InvalidArgument) as err:
        load_json(io.BytesIO(b"[" + b"1," * 1000 + b"1]"), max_bytes=100)
    assert err.value.reason == "JSON_TOO_LARGE"
    with pytest.raises(InvalidArgument) as err:
        load_json(io.BytesIO(b'{"a": '))
    assert err.value.reason == "JSON_INVALID"


def test_jsonl_reports_bad_lines_and_goes_on() -> None:
    """Each bad line is a LineError with its number; good lines around it still parse."""
    data = b'{"a": 1}\n{bad\n\n[NaN]\n' + b'"' + b"x" * 200 + b'"\n{"b": 2}\n'
    entries = list(iter_jsonl(io.BytesIO(data), max_line_bytes=100))
    assert entries[0] == (1, {"a": 1})
    assert isinstance(entries[1], LineError)
    assert (entries[1].line, entries[1].reason) == (2, "JSON_INVALID")
    assert isinstance(entries[2], LineError)
    assert (entries[2].line, entries[2].reason) == (4, "JSON_NON_FINITE")
    assert isinstance(entries[3], LineError)
    assert (entries[3].line, entries[3].reason) == (5, "JSON_TOO_LARGE")
    assert entries[4] == (6, {"b": 2})


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>&xxe;</filename></annotation>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotation>&lol3;</annotation>"""
DTD_ONLY = b'<?xml version="1.0"?><!DOCTYPE annotation SYSTEM "http://169.254.169.254/x.dtd"><annotation/>'


@pytest.mark.parametrize("document", [XXE, LAUGHS, DTD_ONLY])
def test_xml_entities_and_dtds_are_forbidden(document: bytes) -> None:
    """XXE, billion laughs and external DTDs are XML_FORBIDDEN, parsed whole or streamed."""
    with pytest.raises(InvalidArgument) as err:
        parse_xml(document)
    assert err.value.reason == "XML_FORBIDDEN"
    with pytest.raises(InvalidArgument) as err:
        list(iterparse_xml(io.BytesIO(document)))
    assert err.value.reason == "XML_FORBIDDEN"


def test_malformed_and_oversize_xml() -> None:
    """Broken XML is XML_INVALID; a document over the cap is XML_TOO_LARGE; good XML parses."""
    with pytest.raises(InvalidArgument) as err:
        parse_xml(b"<a><b></a>")
    assert err.value.reason == "XML_INVALID"
    with pytest.raises(InvalidArgument) as err:
        parse_xml(b"<a>" + b"x" * 200 + b"</a>", max_bytes=100)
    assert err.value.reason == "XML_TOO_LARGE"
    assert parse_xml(b"<a><b>1</b></a>").findtext("b") == "1"


def _strict_depth(document: bytes, chunk: int, max_depth: int) -> int | str:
    reader = StrictJsonReader(io.BytesIO(document), max_bytes=1 << 30, max_depth=max_depth, where="doc")
    try:
        while reader.read(chunk):
            pass
    except InvalidArgument as exc:
        return exc.reason
    return reader.depth


def test_strict_reader_agrees_with_whole_document_checks_at_every_chunk_size() -> None:
    """Depth limits, escapes, quotes and NaN split at any chunk boundary give the same verdict as json_depth."""
    rng = random.Random(4)

    def value(depth: int) -> object:
        if depth > 7 or rng.random() < 0.3:
            return rng.choice(['a"b', "\\", "[{", 'x\\"]', "NaN", "é", 1, 2.5, None, True])
        if rng.random() < 0.5:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["k", '"[', "\\"]) + str(i): value(depth + 1) for i in range(rng.randint(0, 3))}

    for n in range(200):
        document = json.dumps(value(0), ensure_ascii=n % 2 == 0).encode()
        depth = json_depth(document)
        for chunk in (1, 2, 3, 7, 1 << 16):
            assert _strict_depth(document, chunk, depth) == 0
            if depth:
                assert _strict_depth(document, chunk, depth - 1) == "JSON_TOO_DEEP"
    for chunk in (1, 3, 100):
        assert _strict_depth(b'{"x": [1, -Infinity]}', chunk, 64) == "JSON_NON_FINITE"
        assert _strict_depth(b'{"x": "NaN \\\\", "Infinity": 1}', chunk, 64) == 0
