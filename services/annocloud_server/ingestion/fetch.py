"""Fetching manifest URLs without server-side request forgery.

Only http and https. The host is resolved once with ``socket.getaddrinfo`` (which also turns
decimal, hex and octal IPv4 spellings into the real address) and EVERY address it resolves to
must be public: loopback, private, link-local, multicast, reserved, unspecified, shared and
cloud-metadata addresses are refused. The request then connects to the vetted IP itself (the
original host goes in the Host header and TLS SNI), so a second DNS answer cannot differ.
Redirects are followed by hand, at most three, each hop vetted again. Bodies stream into a sink
with a byte limit and an overall deadline.

``allowed_private_hosts`` lets an operator (or a test) reach named private endpoints: an entry
is a host or IP (any port) or ``host:port`` / ``ip:port`` (that port only). Cloud-metadata
addresses are refused even when listed.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx

from annocloud_server.common.errors import InvalidArgument

T = TypeVar("T")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200", "168.63.129.16")
)
SCHEMES = ("http", "https")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one fetch."""

    max_bytes: int
    allowed_private_hosts: frozenset[str] = frozenset()
    max_redirects: int = 3
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 60.0


@dataclass(frozen=True)
class Fetched:
    """Where the content finally came from, and what the sink returned."""

    final_url: str
    content_type: str


def refused(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason="URL_REFUSED")


def failed(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason="URL_FETCH_FAILED")


def _normalise(address: IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return mapped
        if address.teredo is not None:
            return address.teredo[1]
    return address


def is_forbidden_address(address: IpAddress) -> bool:
    """True for any address that is not a plain public unicast address."""
    address = _normalise(address)
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def _allowed(policy: FetchPolicy, host: str, address: IpAddress, port: int) -> bool:
    names = {host.lower(), str(address), str(_normalise(address))}
    return any(
        name in policy.allowed_private_hosts or f"{name}:{port}" in policy.allowed_private_hosts
        for name in names
    )


def vet_url(url: httpx.URL, policy: FetchPolicy) -> IpAddress:
    """The address to connect to for ``url``; URL_REFUSED when the scheme or any address is forbidden."""
    if url.scheme not in SCHEMES:
        raise refused(f"URL scheme {url.scheme or '(none)'!r} is not allowed; use http or https")
    host = url.host
    if not host:
        raise refused("URL has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise failed(f"host {host!r} does not resolve") from exc
    addresses: list[IpAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if _normalise(address) in METADATA_ADDRESSES or address in METADATA_ADDRESSES:
            raise refused(f"host {host!r} is a cloud metadata address")
        if is_forbidden_address(address) and not _allowed(policy, host, address, port):
            raise refused(f"host {host!r} resolves to a non-public address ({address})")
        addresses.append(address)
    if not addresses:
        raise failed(f"host {host!r} does not resolve")
    return addresses[0]


def parse_url(raw: str) -> httpx.URL:
    try:
        return httpx.URL(raw)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise refused(f"URL is not valid: {exc}") from exc


def fetch(raw_url: str, policy: FetchPolicy, sink: Callable[[Iterable[bytes]], T]) -> tuple[Fetched, T]:
    """GETs ``raw_url`` under the SSRF guard and hands the body chunks to ``sink``."""
    url = parse_url(raw_url)
    deadline = time.monotonic() + policy.total_timeout
    timeout = httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _hop in range(policy.max_redirects + 1):
            address = vet_url(url, policy)
            target = url.copy_with(host=str(address))
            headers = {"Host": url.netloc.decode("ascii"), "Accept-Encoding": "identity"}
            extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
            try:
                with client.stream("GET", target, headers=headers, extensions=extensions) as response:
                    if response.status_code in REDIRECT_STATUSES:
                        location = response.headers.get("location")
                        if not location:
                            raise failed(f"HTTP {response.status_code} without a Location header")
                        url = url.join(parse_url(location))
                        continue
                    if response.status_code != 200:
                        raise failed(f"HTTP {response.status_code} from {_shown(url)}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                        raise failed(f"content is larger than the limit of {policy.max_bytes} bytes")
                    result = sink(_body(response, deadline))
                    content_type = response.headers.get("content-type", "")
                    return Fetched(final_url=str(url), content_type=content_type), result
            except httpx.HTTPError as exc:
                raise failed(f"fetching {_shown(url)} failed: {type(exc).__name__}") from exc
    raise failed(f"more than {policy.max_redirects} redirects")


def _body(response: httpx.Response, deadline: float) -> Iterator[bytes]:
    for chunk in response.iter_raw():
        if time.monotonic() > deadline:
            raise failed("the download took too long")
        yield chunk


def _shown(url: httpx.URL) -> str:
    """The URL without credentials or query, for messages."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))
