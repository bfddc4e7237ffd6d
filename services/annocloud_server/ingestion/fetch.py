"""Fetching manifest URLs without server-side request forgery.

Only http and https. The host is resolved once with ``socket.getaddrinfo`` (which also turns
decimal, hex and octal IPv4 spellings into the real address) and EVERY address it resolves to
must be public: loopback, private, link-local, multicast, reserved, unspecified, shared and
cloud-metadata addresses are refused. The request then connects to the vetted IP itself (the
original host goes in the Host header and TLS SNI), so a second DNS answer cannot differ.
After connecting, the address the socket actually reached must be the vetted one. Redirects are
followed by hand, at most three, each hop vetted again. Bodies stream into a sink
with a byte limit and an overall deadline.

``allowed_private_hosts`` lets an operator (or a test) reach named private endpoints: an entry
is a host or IP (any port) or ``host:port`` / ``ip:port`` (that port only). Cloud-metadata
addresses are refused even when listed.
"""

from __future__ import annotations

import ipaddress
import re
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
NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
"""IPv6 prefixes that translate to an embedded IPv4 address (RFC 6052, RFC 8215)."""
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
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
        if any(address in prefix for prefix in NAT64_PREFIXES) or (
            address in IPV4_COMPATIBLE and int(address) > 1
        ):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
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


_NUMERIC_V4 = re.compile(r"^[0-9a-fA-Fx.]+$")


def literal_address(host: str) -> IpAddress | None:
    """``host`` as an address when it is one in any spelling the C library accepts (``2130706433``,
    ``0x7f.1``, ``0177.0.0.1``, ``127.1``, IPv6), so that no DNS lookup is ever made for it."""
    name = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    if _NUMERIC_V4.match(name):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    return None


def _resolve(host: str, port: int) -> list[IpAddress]:
    name = host[:-1] if host.endswith(".") else host
    literal = literal_address(name)
    if literal is not None:
        return [literal]
    if name.lower() == "localhost" or name.lower().endswith(".localhost"):
        return [ipaddress.IPv4Address("127.0.0.1")]  # RFC 6761: never sent to a resolver
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise failed(f"host {host!r} does not resolve") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def vet_url(url: httpx.URL, policy: FetchPolicy) -> IpAddress:
    """The address to connect to for ``url``; URL_REFUSED when the scheme or any address is forbidden."""
    if url.scheme not in SCHEMES:
        raise refused(f"URL scheme {url.scheme or '(none)'!r} is not allowed; use http or https")
    host = url.host
    if not host:
        raise refused("URL has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses: list[IpAddress] = []
    for address in _resolve(host, port):
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
                    _check_peer(response, address)
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


def _check_peer(response: httpx.Response, expected: IpAddress) -> None:
    """The connection must have reached the vetted address itself, not whatever a resolver, proxy or
    patched transport chose later (DNS rebinding between the check and the connect)."""
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not peer:
        raise refused("could not confirm the address the connection reached")
    try:
        connected = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError as exc:
        raise refused("could not confirm the address the connection reached") from exc
    if _normalise(connected) != _normalise(expected):
        raise refused(f"the connection reached {connected}, not the vetted address {expected}")


def _body(response: httpx.Response, deadline: float) -> Iterator[bytes]:
    for chunk in response.iter_raw():
        if time.monotonic() > deadline:
            raise failed("the download took too long")
        yield chunk


def _shown(url: httpx.URL) -> str:
    """The URL without credentials or query, for messages."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))
