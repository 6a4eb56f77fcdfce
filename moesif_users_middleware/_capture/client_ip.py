"""Resolve a request's client IP address behind trusted reverse proxies.

Secure by default: forwarding headers are believed only when the socket peer is a
trusted proxy. The peer address is the only one a client cannot forge, so:

* When the peer is not trusted it *is* the client, and no header is even read.
* When the peer is trusted, the first of these headers that holds at least one hop
  is used, and only that one: ``Forwarded`` (RFC 7239 ``for=`` parameters),
  ``X-Forwarded-For``, ``X-Real-IP``, then the opted-in ``extra_headers`` in the
  order given. A blank header, or a ``Forwarded`` header without any ``for=``, is
  treated as absent.
* The hops, with the peer appended on the right, are walked right to left: trusted
  hops are skipped and the first untrusted address is the client. When every hop is
  trusted the client is the left-most valid one.
* Empty list elements are not hops. Values that are not IP addresses (garbage,
  nginx's ``unix:``) are skipped, never raised.
* An obfuscated identifier (``unknown``, ``_hidden``; RFC 7239 section 6) stops the
  walk and the answer is ``None``: a trusted proxy declared that it does not know or
  will not tell who its client was, and everything further left was written by that
  unknown party, so believing it would let a client pick its own address.
* Results are normalized: ports, brackets and IPv6 zone ids are removed, IPv4-mapped
  IPv6 (``::ffff:1.2.3.4``) becomes the IPv4 address, IPv6 is compressed.
* A peer that is not an IP address (a Unix domain socket: gunicorn reports ``""``,
  uvicorn ``None``) gives ``None``, unless ``trusted_proxies`` contains ``"unix"``,
  in which case such a peer is a trusted proxy.

The default trusted hops are an explicit list of loopback and private ranges, not
``ipaddress.is_private``, whose answers differ between Python versions. Passing
``trusted_proxies`` replaces that list. Verdicts are cached in small bounded dicts
(cleared when full) because parsing addresses costs microseconds per request.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal, TypeVar

__all__ = ["DEFAULT_TRUSTED_PROXIES", "UNIX_PEER", "ClientIpResolver"]

DEFAULT_TRUSTED_PROXIES: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)

#: A ``trusted_proxies`` entry that trusts peers that are not IP addresses (Unix sockets).
UNIX_PEER = "unix"

_BUILTIN_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
_DEFAULT_CACHE_SIZE = 4096
# Longer keys are resolved without caching so that clients cannot pin large strings.
_MAX_CACHED_KEY_LEN = 512
_MAPPED_V4 = ipaddress.IPv6Network("::ffff:0:0/96")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+", re.ASCII)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+", re.ASCII)
# One Forwarded token: a run of quoted strings and other characters, or a separator.
_FORWARDED_TOKEN = re.compile(r'(?:"(?:[^"\\]|\\.)*"?|[^",;])+|[,;]', re.DOTALL)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)

# A parsed address: (normalized text, IP version, integer value).
_Address = tuple[str, int, int]
# (network, mask) integer pairs: cheaper than ``address in network``.
_Ranges = tuple[tuple[int, int], ...]
# A hop's verdict: (normalized address or None, trusted, obfuscated identifier).
_HopVerdict = tuple[str | None, bool, bool]
# A peer's verdict: (normalized address or None, trusted).
_PeerVerdict = tuple[str | None, bool]
_K = TypeVar("_K")
_V = TypeVar("_V")


class _Result(enum.Enum):
    MISS = 0  # not in the cache
    ABSENT = 1  # the header holds no hop: try the next one


_MISS: Final = _Result.MISS  # module constants: cheaper to load than enum attributes
_ABSENT: Final = _Result.ABSENT


class ClientIpResolver:
    """Find the client address of a request from its peer and forwarding headers.

    ``trusted_proxies``: addresses and CIDRs (IPv4 and IPv6; a string is split on
    commas) of the proxies whose forwarding headers are believed; ``None`` means
    ``DEFAULT_TRUSTED_PROXIES``, anything else replaces it. ``"unix"`` trusts peers
    that are not IP addresses. An invalid entry raises ``ValueError``.
    ``extra_headers``: lower-case names such as ``"cf-connecting-ip"`` to believe too
    (only from a trusted peer, after the standard headers); none by default.
    """

    header_names: tuple[str, ...]

    def __init__(
        self,
        trusted_proxies: Iterable[str] | None = None,
        extra_headers: Sequence[str] = (),
        *,
        cache_size: int = _DEFAULT_CACHE_SIZE,
    ) -> None:
        self._v4, self._v6, self._trust_unix = _parse_trusted(
            DEFAULT_TRUSTED_PROXIES if trusted_proxies is None else trusted_proxies
        )
        self.header_names = _parse_header_names(extra_headers)
        self._cache_size = max(0, cache_size)
        self._peer_cache: dict[str | None, _PeerVerdict] = {}
        self._hop_cache: dict[str, _HopVerdict] = {}
        self._chain_cache: dict[tuple[str, str | None, str], str | _Result | None] = {}

    def resolve(self, peer: str | None, get_header: Callable[[str], str | None]) -> str | None:
        """Return the normalized client address, or ``None`` if unknown. Never raises.

        ``get_header(name)`` is called with lower-case names and returns the header's
        value (repeated headers comma-joined) or ``None``. It is not called at all
        when the peer is not a trusted proxy.
        """
        try:
            verdict = self._peer_cache.get(peer)
            if verdict is None:
                verdict = self._peer_verdict(peer)
            client, trusted = verdict
            if not trusted:
                return client
            cache = self._chain_cache
            for name in self.header_names:
                value = get_header(name)
                if not value:
                    continue
                if value.__class__ is not str:
                    value = _as_text(value)
                    if not value:
                        continue
                key = (name, peer, value)
                result = cache.get(key, _MISS)
                if result is _MISS:
                    result = self._walk(name, value, client)
                    if len(value) <= _MAX_CACHED_KEY_LEN:
                        _store(cache, key, result, self._cache_size)
                if result is _ABSENT:
                    continue
                return result
            return client
        except Exception:
            return None

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` (an IP, optionally with port or brackets) is a trusted hop."""
        try:
            return self._hop(address)[1]
        except Exception:
            return False

    def _peer_verdict(self, peer: object) -> _PeerVerdict:
        if peer is not None and not isinstance(peer, str):
            return (None, False)  # an adapter bug, not a Unix socket: trust nothing
        address = None if peer is None else _parse_node(peer)[0]
        if address is None:
            verdict: _PeerVerdict = (None, self._trust_unix)
        else:
            verdict = (address[0], self._contains(address))
        if peer is None or len(peer) <= _MAX_CACHED_KEY_LEN:
            _store(self._peer_cache, peer, verdict, self._cache_size)
        return verdict

    def _hop(self, text: str) -> _HopVerdict:
        verdict = self._hop_cache.get(text)
        if verdict is None:
            address, obfuscated = _parse_node(text)
            if address is None:
                verdict = (None, False, obfuscated)
            else:
                verdict = (address[0], self._contains(address), False)
            if len(text) <= _MAX_CACHED_KEY_LEN:
                _store(self._hop_cache, text, verdict, self._cache_size)
        return verdict

    def _contains(self, address: _Address) -> bool:
        _, version, value = address
        for network, mask in self._v4 if version == 4 else self._v6:
            if value & mask == network:
                return True
        return False

    def _walk(
        self, name: str, value: str, peer: str | None
    ) -> str | Literal[_Result.ABSENT] | None:
        hops = _forwarded_for(value) if name == "forwarded" else value.split(",")
        leftmost = peer
        seen = False
        for hop in reversed(hops):
            if not hop or hop.isspace():
                continue
            seen = True
            address, trusted, obfuscated = self._hop(hop)
            if obfuscated:
                return None
            if address is None:
                continue
            if not trusted:
                return address
            leftmost = address
        return leftmost if seen else _Result.ABSENT


def _store(cache: dict[_K, _V], key: _K, value: _V, size: int) -> None:
    # Lock-free: dict operations are atomic, and a lost insert only costs a recompute.
    if len(cache) >= size:
        cache.clear()
        if size == 0:
            return
    cache[key] = value


def _as_text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return value if isinstance(value, str) else ""


def _parse_node(text: str) -> tuple[_Address | None, bool]:
    """Parse one hop (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``, ``fe80::1%eth0``).

    Returns ``(address, obfuscated)``; the address is ``None`` for anything unusable.
    """
    node = text.strip()
    if node.startswith("["):
        end = node.find("]")
        rest = node[end + 1 :]
        if end < 0 or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest, 1))):
            return None, False
        host = node[1:end]
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
        if not _PORT.fullmatch(port):
            return None, False
    else:
        host = node
    if host.startswith("_") or (len(host) == 7 and host.lower() == "unknown"):
        return None, True
    if ":" not in host:
        # Dotted quad exactly as ipaddress accepts it (no leading zeros), ~2x faster.
        if _IPV4.fullmatch(host) is None:
            return None, False
        return (host, 4, int.from_bytes(socket.inet_aton(host), "big")), False
    if "%" in host:
        host = host[: host.index("%")]
    try:
        ipv6 = ipaddress.IPv6Address(host)
    except ValueError:
        return None, False
    mapped = ipv6.ipv4_mapped
    if mapped is not None:
        return (str(mapped), 4, int(mapped)), False
    return (str(ipv6), 6, int(ipv6)), False


def _forwarded_for(value: str) -> list[str]:
    """The unquoted ``for=`` value of each RFC 7239 element that has one, left to right."""
    fors: list[str] = []
    current: str | None = None
    for match in _FORWARDED_TOKEN.finditer(value):
        token = match.group()
        if token == ",":
            if current is not None:
                fors.append(current)
            current = None
        elif current is None and token != ";":
            key, equals, raw = token.partition("=")
            if equals and key.strip().lower() == "for":
                current = _unquote(raw.strip())
    if current is not None:
        fors.append(current)
    return fors


def _unquote(value: str) -> str:
    if not value.startswith('"'):
        return value
    match = _QUOTED.fullmatch(value)
    if match is None:
        return value  # unterminated: left as is, so it fails to parse as an address
    return _QUOTED_PAIR.sub(r"\1", match.group(1))


def _parse_trusted(entries: Iterable[str]) -> tuple[_Ranges, _Ranges, bool]:
    if isinstance(entries, str):
        entries = [item for item in entries.split(",") if item.strip()]
    v4: list[tuple[int, int]] = []
    v6: list[tuple[int, int]] = []
    trust_unix = False
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"invalid trusted proxy {entry!r}: expected an address or CIDR")
        text = entry.strip()
        if text.lower() == UNIX_PEER:
            trust_unix = True
            continue
        if "%" in text:  # drop an IPv6 zone id, keep any prefix length
            address, _, rest = text.partition("%")
            text = address + rest[rest.find("/") :] if "/" in rest else address
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise ValueError(f"invalid trusted proxy {entry!r}: {exc}") from None
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED_V4):
            # Hops are normalized to IPv4, so match IPv4-mapped ranges as IPv4.
            network = ipaddress.IPv4Network(
                (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96)
            )
        target = v4 if network.version == 4 else v6
        target.append((int(network.network_address), int(network.netmask)))
    return tuple(v4), tuple(v6), trust_unix


def _parse_header_names(extra_headers: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extra_headers, str):
        extra_headers = [item for item in extra_headers.split(",") if item.strip()]
    names = list(_BUILTIN_HEADERS)
    for entry in extra_headers:
        name = entry.strip().lower() if isinstance(entry, str) else ""
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid extra header name {entry!r}")
        if name not in names:
            names.append(name)
    return tuple(names)
