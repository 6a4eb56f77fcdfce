"""Extract a Moesif acquisition campaign from a request's query string and Referer.

* UTM parameters and ``gclid`` come from the raw query string, which is parsed only
  when it contains ``utm_`` or ``gclid`` (the common request pays one substring
  test). Parsing follows ``urllib.parse.parse_qsl(keep_blank_values=False)``; the
  first non-blank value of a key wins; values are stripped and cut to
  ``MAX_VALUE_LENGTH`` characters. Keys are case-sensitive.
* ``referrer`` (the Referer, cut to ``MAX_REFERRER_LENGTH``) and ``referring_domain``
  (its lower-case hostname, without port) are set only for an absolute http(s)
  Referer whose hostname differs from the request's ``Host`` hostname: navigation
  within the site is not an acquisition source. Subdomains count as different sites.
* Garbage never raises: it is ignored.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = [
    "CAMPAIGN_QUERY_KEYS",
    "MAX_REFERRER_LENGTH",
    "MAX_VALUE_LENGTH",
    "extract_campaign",
]

CAMPAIGN_QUERY_KEYS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "gclid",
)
MAX_VALUE_LENGTH = 256
MAX_REFERRER_LENGTH = 1024

_QUERY_KEYS = frozenset(CAMPAIGN_QUERY_KEYS)
# Browsers end a URL's authority at / ? # or a backslash.
_AUTHORITY_END = re.compile(r"[/?#\\]")
_HOSTNAME = re.compile(r"[a-z0-9._-]+", re.ASCII)
_IPV6 = re.compile(r"[0-9a-f:.]+", re.ASCII)
# Hosts repeat (the site's own Host header, popular referrers): cache their parse.
_HOST_CACHE: dict[str, str | None] = {}
_HOST_CACHE_SIZE = 1024
_MAX_HOST_LENGTH = 300


def extract_campaign(
    query_string: str, referer: str | None, host: str | None
) -> dict[str, str] | None:
    """Return the campaign fields present in the request, or ``None``. Never raises.

    ``query_string`` is the raw query without ``?``; ``host`` is the request's Host
    header (a port is ignored). The keys are the Moesif wire names: ``utm_source``,
    ``utm_medium``, ``utm_campaign``, ``utm_term``, ``utm_content``, ``gclid``,
    ``referrer``, ``referring_domain``.
    """
    try:
        campaign = None
        if query_string and ("utm_" in query_string or "gclid" in query_string):
            campaign = _parse_query(query_string)
        if referer:
            domain = _referring_domain(referer, host)
            if domain is not None:
                if campaign is None:
                    campaign = {}
                campaign["referrer"] = referer.strip()[:MAX_REFERRER_LENGTH]
                campaign["referring_domain"] = domain
        return campaign
    except Exception:
        return None


def _parse_query(query_string: str) -> dict[str, str] | None:
    # The pairs of parse_qsl(keep_blank_values=False), but only kept keys are decoded.
    campaign: dict[str, str] = {}
    for part in query_string.split("&"):
        key, _, value = part.partition("=")
        if key not in _QUERY_KEYS:
            if "%" not in key:  # a "+" would decode to a space, which no kept key has
                continue
            key = unquote_plus(key)
            if key not in _QUERY_KEYS:
                continue
        if not value or key in campaign:
            continue
        if "%" in value:
            value = unquote_plus(value)
        elif "+" in value:
            value = value.replace("+", " ")
        value = value.strip()
        if len(value) > MAX_VALUE_LENGTH:
            value = value[:MAX_VALUE_LENGTH].rstrip()
        if value:
            campaign[key] = value
    return campaign or None


def _referring_domain(referer: str, host: str | None) -> str | None:
    """The Referer's hostname if it is an absolute http(s) URL of another site."""
    url = referer.lstrip()
    if url.startswith("https://") or url[:8].lower() == "https://":
        start = 8
    elif url.startswith("http://") or url[:7].lower() == "http://":
        start = 7
    else:
        return None
    end = _AUTHORITY_END.search(url, start)
    authority = url[start : end.start()] if end else url[start:]
    hostname = _hostname(authority.rpartition("@")[2])
    if hostname is None or (host and (host == hostname or _hostname(host) == hostname)):
        return None
    return hostname


def _hostname(host_port: str) -> str | None:
    """The lower-case hostname of ``host[:port]`` or ``[ipv6][:port]``; None if invalid."""
    hostname = _HOST_CACHE.get(host_port, "")
    if hostname == "":
        hostname = _parse_hostname(host_port)
        if len(host_port) <= _MAX_HOST_LENGTH:
            # Lock-free: dict operations are atomic, a lost insert only costs a parse.
            if len(_HOST_CACHE) >= _HOST_CACHE_SIZE:
                _HOST_CACHE.clear()
            _HOST_CACHE[host_port] = hostname
    return hostname


def _parse_hostname(host_port: str) -> str | None:
    text = host_port.strip()
    if not text.isascii():  # before lower(), which turns e.g. the Kelvin sign into "k"
        return None
    text = text.lower()
    if text.startswith("["):
        name, bracket, port = text[1:].partition("]")
        if not bracket or not _IPV6.fullmatch(name):
            return None
        if port and port[0] != ":":
            return None
        port = port[1:]
    else:
        name, _, port = text.partition(":")
        if not _HOSTNAME.fullmatch(name):
            return None
        name = name.rstrip(".")
        if not name or name.startswith(".") or ".." in name:
            return None
    if port and not (port.isdigit() and port.isascii()):
        return None
    return name
