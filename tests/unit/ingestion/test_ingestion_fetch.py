"""The SSRF guard's address vetting (literal addresses only: no network)."""

from __future__ import annotations

import socket

import httpx
import pytest
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.ingestion.fetch import (
    FetchPolicy,
    fetch,
    is_forbidden_address,
    literal_address,
    vet_url,
)

POLICY = FetchPolicy(max_bytes=1024)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.1/",
        "http://017700000001/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "https://[::]/",
        "http://0/",
        "http://0x7f.0x0.0x0.0x1/",
        "http://127.0.0.1./",
        "http://foo.localhost./",
        "http://localhost/",
        "http://[0:0:0:0:0:ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b:1::a9fe:a9fe]/",
        "http://[2002:7f00:1::]/",
    ],
)
def test_non_public_addresses_are_refused(url: str) -> None:
    """Loopback, private, link-local, multicast, reserved, unspecified and metadata addresses, in
    decimal, hex, octal, short and IPv6-mapped spellings, are URL_REFUSED."""
    with pytest.raises(InvalidArgument) as err:
        vet_url(httpx.URL(url), POLICY)
    assert err.value.reason == "URL_REFUSED"


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://8.8.8.8/x", "gopher://8.8.8.8/", "data:text/plain,hi"]
)
def test_non_http_schemes_are_refused(url: str) -> None:
    """Only http and https may be fetched."""
    with pytest.raises(InvalidArgument) as err:
        fetch(url, POLICY, lambda chunks: b"".join(chunks))
    assert err.value.reason == "URL_REFUSED"


def test_public_address_passes() -> None:
    """A public literal address is returned as the address to connect to."""
    assert str(vet_url(httpx.URL("http://8.8.8.8:8080/x"), POLICY)) == "8.8.8.8"
    assert not is_forbidden_address(vet_url(httpx.URL("https://1.1.1.1/"), POLICY))


def test_allow_list_by_ip_and_port() -> None:
    """An ip:port entry allows that port only; an ip entry allows any port; metadata never."""
    one_port = FetchPolicy(max_bytes=1, allowed_private_hosts=frozenset({"127.0.0.1:8080"}))
    assert str(vet_url(httpx.URL("http://127.0.0.1:8080/"), one_port)) == "127.0.0.1"
    with pytest.raises(InvalidArgument):
        vet_url(httpx.URL("http://127.0.0.1:8081/"), one_port)
    any_port = FetchPolicy(max_bytes=1, allowed_private_hosts=frozenset({"10.1.2.3", "169.254.169.254"}))
    assert str(vet_url(httpx.URL("http://10.1.2.3:9999/"), any_port)) == "10.1.2.3"
    with pytest.raises(InvalidArgument) as err:
        vet_url(httpx.URL("http://169.254.169.254/"), any_port)
    assert "metadata" in err.value.message


def test_a_name_resolving_to_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolver stub answers a public and a loopback address for one name: every answer is vetted,
    so the name is refused (no lookup leaves the process)."""

    def resolve(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        assert host == "mixed.example"
        return [(2, 1, 6, "", ("8.8.8.8", port)), (2, 1, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(InvalidArgument) as err:
        vet_url(httpx.URL("http://mixed.example/a.png"), POLICY)
    assert err.value.reason == "URL_REFUSED"


def test_a_name_resolving_to_metadata_in_ipv6_spelling_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name whose only answer is the metadata address spelled as IPv4-mapped IPv6 is refused even when
    the name is allow-listed."""
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: [(10, 1, 6, "", ("::ffff:169.254.169.254", port, 0, 0))],
    )
    allowed = FetchPolicy(max_bytes=1, allowed_private_hosts=frozenset({"meta.example"}))
    with pytest.raises(InvalidArgument) as err:
        vet_url(httpx.URL("http://meta.example/"), allowed)
    assert "metadata" in err.value.message


@pytest.mark.parametrize("host", ["0177.0.0.1", "0x7f.1", "2130706433", "127.1", "0", "[::ffff:7f00:1]"])
def test_numeric_spellings_are_addresses_without_a_lookup(host: str) -> None:
    """Every numeric spelling of loopback is read as an address by the guard itself (no DNS), and a
    fetch of it is URL_REFUSED whether httpx accepts the spelling or not."""
    address = literal_address(host)
    assert address is not None
    assert is_forbidden_address(address)
    with pytest.raises(InvalidArgument) as err:
        fetch(f"http://{host}/x", POLICY, lambda chunks: b"".join(chunks))
    assert err.value.reason == "URL_REFUSED"
