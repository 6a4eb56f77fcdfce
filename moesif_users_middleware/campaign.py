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
# host[.][:port] or [ipv6][:port], already lower-cased; group 1 or 2 is the hostname.
_HOST_PORT = re.compile(
    r"([a-z0-9_-]+(?:\.[a-z0-9_-]+)*)\.?(?::[0-9]*)?|\[([0-9a-f:.]+)\](?::[0-9]*)?",
    re.ASCII,
)


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
        campaign: dict[str, str] = {}
        if query_string and ("utm_" in query_string or "gclid" in query_string):
            _parse_query(query_string, campaign)
        if referer:
            domain = _referring_domain(referer, host)
            if domain is not None:
                campaign["referrer"] = referer.strip()[:MAX_REFERRER_LENGTH]
                campaign["referring_domain"] = domain
        return campaign or None
    except Exception:
        return None


def _parse_query(query_string: str, campaign: dict[str, str]) -> None:
    # Same pairs as parse_qsl(keep_blank_values=False), but values are decoded
    # only for the keys we keep.
    for part in query_string.split("&"):
        key, _, value = part.partition("=")
        if not value:
            continue
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if key not in _QUERY_KEYS or key in campaign:
            continue
        text = unquote_plus(value).strip()
        if len(text) > MAX_VALUE_LENGTH:
            text = text[:MAX_VALUE_LENGTH].rstrip()
        if text:
            campaign[key] = text


def _referring_domain(referer: str, host: str | None) -> str | None:
    """The Referer's hostname if it is an absolute http(s) URL of another site."""
    url = referer.strip()
    scheme = url[:8].lower()
    if scheme.startswith("https://"):
        rest = url[8:]
    elif scheme.startswith("http://"):
        rest = url[7:]
    else:
        return None
    end = len(rest)
    for delimiter in "/?#\\":  # browsers end the authority at a backslash too
        index = rest.find(delimiter, 0, end)
        if index >= 0:
            end = index
    hostname = _hostname(rest[:end].rpartition("@")[2])
    if hostname is None or (host and hostname == _hostname(host)):
        return None
    return hostname


def _hostname(host_port: str) -> str | None:
    match = _HOST_PORT.fullmatch(host_port.strip().lower())
    if match is None:
        return None
    return match.group(1) or match.group(2)
