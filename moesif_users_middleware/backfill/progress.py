"""Progress reporting: a redrawn bar on a terminal, periodic plain lines otherwise.

``update`` may be called from several threads and as often as wanted: output is
throttled (the bar redraws at most 10 times a second, log lines every ``interval``
seconds).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = [
    "BarProgress",
    "LogProgress",
    "NullProgress",
    "Progress",
    "make_progress",
    "plural",
]


class Progress:
    """Base class: tracks counts, renders nothing."""

    def __init__(
        self, stream: TextIO | None = None, *, label: str = "users", noun: str | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label = label  # the plural: "users", "companies"
        self.noun = noun if noun is not None else label.removesuffix("s")  # for one record
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._initial = 0
        self.done = 0
        self.total: int | None = None
        self.invalid = 0
        self.failed = 0

    def start(self, total: int | None, initial: int = 0) -> None:
        """Begin timing; ``initial`` records were settled by an earlier run."""
        with self._lock:
            self._started = time.monotonic()
            self._initial = initial
            self.done = initial
            self.total = total

    def update(
        self, done: int, total: int | None = None, *, invalid: int = 0, failed: int = 0
    ) -> None:
        """Record progress: ``done`` records settled (of ``total``, if known)."""
        with self._lock:
            self.done = max(self.done, done)
            if total is not None:
                self.total = total
            self.invalid = invalid
            self.failed = failed
            self._maybe_render(time.monotonic(), final=False)

    def finish(self) -> None:
        """Render a last time (the bar ends its line)."""
        with self._lock:
            self._maybe_render(time.monotonic(), final=True)

    def _maybe_render(self, now: float, final: bool) -> None:
        """Subclasses render here; called with the lock held."""

    def rate(self, now: float) -> float:
        """Records per second settled by this run."""
        elapsed = now - self._started
        return (self.done - self._initial) / elapsed if elapsed > 0 else 0.0

    def describe(self, now: float) -> str:
        """``412,000/1,000,000 users (41.2%), 21,340/s, ETA 0:00:27, 3 invalid``."""
        rate = self.rate(now)
        total = self.total
        label = self.noun if (total or self.done) == 1 else self.label
        parts = [
            f"{self.done:,}/{total:,} {label} ({_percent(self.done, total)})"
            if total
            else f"{self.done:,} {label}",
            f"{rate:,.0f}/s",
        ]
        if total and rate > 0 and total > self.done:
            parts.append(f"ETA {_duration((total - self.done) / rate)}")
        if self.invalid:
            parts.append(f"{self.invalid:,} invalid")
        if self.failed:
            parts.append(f"{self.failed:,} failed")
        return ", ".join(parts)


class NullProgress(Progress):
    """No output (``--progress none``)."""


class LogProgress(Progress):
    """A plain line every ``interval`` seconds and at the end (for logs and pipes)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        label: str = "users",
        noun: str | None = None,
        interval: float = 10.0,
    ) -> None:
        super().__init__(stream, label=label, noun=noun)
        self.interval = interval
        self._last = 0.0

    def start(self, total: int | None, initial: int = 0) -> None:
        super().start(total, initial)
        self._last = time.monotonic()

    def _maybe_render(self, now: float, final: bool) -> None:
        if not final and now - self._last < self.interval:
            return
        self._last = now
        stamp = time.strftime("%H:%M:%S")
        self.stream.write(f"{stamp} progress: {self.describe(now)}\n")
        self.stream.flush()


class BarProgress(Progress):
    """A one-line bar redrawn in place: ``[#####-----] 41.2% 412,000/1,000,000 ...``."""

    width = 24

    def __init__(
        self, stream: TextIO | None = None, *, label: str = "users", noun: str | None = None
    ) -> None:
        super().__init__(stream, label=label, noun=noun)
        self._last = 0.0

    def _maybe_render(self, now: float, final: bool) -> None:
        if not final and now - self._last < 0.1:
            return
        self._last = now
        total = self.total
        if total:
            filled = min(self.width, self.width * self.done // total)
            bar = "[" + "#" * filled + "-" * (self.width - filled) + "] "
        else:
            bar = ""
        self.stream.write(f"\r\x1b[K{bar}{self.describe(now)}" + ("\n" if final else ""))
        self.stream.flush()


def make_progress(
    mode: str = "auto",
    stream: TextIO | None = None,
    *,
    label: str = "users",
    noun: str | None = None,
    interval: float = 10.0,
) -> Progress:
    """``auto`` (bar on a terminal, log lines otherwise), ``bar``, ``log`` or ``none``.

    ``label`` names the records (``companies``), ``noun`` one of them (``company``).
    """
    out = stream if stream is not None else sys.stderr
    if mode == "auto":
        isatty = getattr(out, "isatty", None)
        mode = "bar" if isatty is not None and isatty() else "log"
    if mode == "bar":
        return BarProgress(out, label=label, noun=noun)
    if mode == "log":
        return LogProgress(out, label=label, noun=noun, interval=interval)
    if mode == "none":
        return NullProgress(out, label=label, noun=noun)
    raise ValueError(f"unknown progress mode {mode!r}")


def plural(count: int, noun: str) -> str:
    """``1 user``, ``0 users``, ``1,000 users`` (``noun`` is the singular)."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _percent(done: int, total: int | None) -> str:
    if not total:
        return "?%"
    return f"{min(100.0, 100.0 * done / total):.1f}%"


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"
