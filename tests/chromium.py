"""Drive the collector's pages in a real headless Chromium and read what it rendered.

``browse(url, profile_dir)`` runs ``chromium --headless --dump-dom`` and parses the DOM
after the browser built it; ``NEEDS_CHROMIUM`` skips a test where no Chromium is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

__all__ = ["CHROMIUM", "NEEDS_CHROMIUM", "Rendered", "browse"]

CHROMIUM = next(
    (
        found
        for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        if (found := shutil.which(name))
    ),
    None,
)
NEEDS_CHROMIUM = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Chromium (apt-get install chromium) to drive the page in a real browser",
)


class Rendered(HTMLParser):
    """What a page shows: links (href, rel, text), table rows' cell texts, input values."""

    def __init__(self, dom: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[dict[str, str]] = []
        self.rows: list[list[str]] = []
        self.inputs: dict[str, str] = {}
        self.forms: list[dict[str, str]] = []
        self.text_parts: list[str] = []
        self._link: dict[str, str] | None = None
        self._cell: list[str] | None = None
        self.feed(dom)
        self.text = " ".join("".join(self.text_parts).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "a":
            self._link = {**attributes, "text": ""}
        elif tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._cell = []
        elif tag == "input":
            self.inputs[attributes.get("name", "")] = attributes.get("value", "")
        elif tag == "form":
            self.forms.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._link is not None:
            self.links.append(self._link)
            self._link = None
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)
        if self._link is not None:
            self._link["text"] += data
        if self._cell is not None:
            self._cell.append(data)

    def link(self, **match: str) -> dict[str, str]:
        found = [link for link in self.links if all(link.get(k) == v for k, v in match.items())]
        assert len(found) == 1, (match, self.links)
        return found[0]

    def rows_with(self, cells: int) -> list[list[str]]:
        """The table rows of ``cells`` cells (one table's rows, where tables differ)."""
        return [row for row in self.rows if len(row) == cells]

    @property
    def profile_rows(self) -> list[list[str]]:
        """The rows of the users' list (nine columns)."""
        return self.rows_with(9)


def browse(url: str, profile_dir: Path) -> Rendered:
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile_dir}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "<html" in result.stdout, result.stderr[-2000:]
    return Rendered(result.stdout)
