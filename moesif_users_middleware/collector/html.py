"""The collector's HTML page: a table of stored profiles, every value escaped.

Partitions are shown by their hash prefix; the page has no way to show an application
id (the store never holds one) and session tokens appear only as a count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["render_page"]

_MAX_CELL = 2000  # characters of metadata shown per profile

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f3f3f3}
pre{margin:0;white-space:pre-wrap;word-break:break-word;max-width:40em}
code{font-size:12px}
.muted{color:#777}
"""


def render_page(
    rows: Sequence[tuple[str, Mapping[str, Any]]], *, prefix: str, limit: int, offset: int
) -> str:
    """The whole page for ``(partition, profile)`` rows."""
    title = "Moesif users collector"
    heading = f"{len(rows)} profile(s)"
    if prefix:
        heading += f" in partitions starting with <code>{escape(prefix)}</code>"
    if offset:
        heading += f", from #{offset + 1}"
    body = (
        "".join(_row(partition, profile) for partition, profile in rows)
        if rows
        else '<tr><td colspan="9" class="muted">No profiles stored yet.</td></tr>'
    )
    more = (
        f'<p class="muted">Showing at most {limit}; use <code>?offset=</code> for more.</p>'
        if len(rows) >= limit
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{title}</h1><p>{heading}. Partitions are SHA-256 prefixes of application ids;"
        " filter with <code>?app=PREFIX</code>.</p>"
        "<table><thead><tr><th>partition</th><th>user id</th><th>company</th>"
        "<th>ip address</th><th>user agent</th><th>campaign</th><th>metadata</th>"
        "<th>session tokens</th><th>modified</th></tr></thead>"
        f"<tbody>{body}</tbody></table>{more}</body></html>\n"
    )


def _row(partition: str, profile: Mapping[str, Any]) -> str:
    campaign = profile.get("campaign") or {}
    campaign_text = "\n".join(f"{key}={value}" for key, value in campaign.items())
    metadata = profile.get("metadata")
    metadata_text = "" if metadata is None else json.dumps(metadata, indent=1)
    if len(metadata_text) > _MAX_CELL:
        metadata_text = metadata_text[:_MAX_CELL] + "\n…"
    cells = [
        f"<code>{_text(partition)}</code>",
        _text(profile.get("user_id")),
        _text(profile.get("company_id")),
        _text(profile.get("ip_address")),
        _text(profile.get("user_agent_string")),
        f"<pre>{_text(campaign_text)}</pre>",
        f"<pre>{_text(metadata_text)}</pre>",
        str(len(profile.get("session_tokens") or ())),
        _text(profile.get("modified_time")),
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _text(value: object) -> str:
    return "" if value is None else escape(str(value), quote=True)
