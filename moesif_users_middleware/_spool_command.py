"""``moesif-users spool DIR``: what a spool directory holds, and ``--send`` to deliver it.

Without ``--send`` nothing is changed: each spool file is listed with its records per
kind, its oldest record and whether the process that wrote it still runs. With
``--send`` this command does what an application restarted with the same ``spool_dir``
would do: it adopts the files of processes that are gone (never those of running ones)
and delivers their records, for a host whose application will not come back.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from ._delivery.spool_db import SpoolDB
from ._delivery.spool_dir import (
    SpoolError,
    SpoolName,
    app_tag,
    claim,
    list_names,
    release_claim,
    try_lock,
)
from ._options.endpoint import resolve_application_id, resolve_base_url
from ._time import utc_text
from .errors import ConfigurationError
from .sender import get_sender

__all__ = ["configure_parser", "run"]

_EPILOG = """\
exit status (--send):
  0    every record delivered
  1    some records were refused by the API (dropped, as the sender does)
  2    usage or configuration error
  3    records are left (API unreachable, or --timeout reached): run it again
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``moesif-users spool``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("directory", metavar="DIR", help="the spool_dir to look at")
    parser.add_argument(
        "--send",
        action="store_true",
        help="deliver the records of processes that are gone (adopting their files)",
    )
    parser.add_argument(
        "--application-id",
        help="the application the records belong to (default: $MOESIF_APPLICATION_ID)",
    )
    parser.add_argument(
        "--base-url", help="API base URL (default: $MOESIF_BASE_URL or https://api.moesif.net)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds --send keeps trying while the API is unavailable (default 120)",
    )


@dataclass
class FileSummary:
    """What one spool file holds."""

    name: SpoolName
    running: bool
    kinds: Counter[str] = field(default_factory=Counter)
    oldest: tuple[float, str, str] | None = None  # (stamp, kind, id)
    size: int = 0
    problem: str = ""


def summarize(name: SpoolName) -> FileSummary:
    """Read one file (nothing is changed)."""
    fd = try_lock(name.lock)
    summary = FileSummary(name, running=fd is None and os.path.exists(name.lock))
    if fd is not None:
        os.close(fd)  # this process holds no other lock on it
    summary.size = sum(_size(path) for path in name.sqlite_files())
    try:
        db = SpoolDB.open(name.db, read_only=True)
    except (SpoolError, sqlite3.Error) as exc:
        summary.problem = str(exc)
        return summary
    try:
        for kind, record_id, _, stamp, _ in db.iter_rows(part=0):
            summary.kinds[kind] += 1
            if summary.oldest is None or stamp < summary.oldest[0]:
                summary.oldest = (stamp, kind, record_id)
    except sqlite3.Error as exc:
        summary.problem = str(exc)
    finally:
        db.close()
    return summary


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def print_summary(directory: str, tag: str | None, out: TextIO) -> list[FileSummary]:
    """List the spool files of ``directory`` (those of application ``tag`` when given)."""
    summaries = [summarize(name) for name in list_names(directory)]
    others = [s for s in summaries if tag is not None and s.name.tag != tag]
    mine = [s for s in summaries if s not in others]
    kinds: Counter[str] = Counter()
    for summary in mine:
        kinds.update(summary.kinds)
    total = sum(kinds.values())
    by_kind = ", ".join(f"{kind} {count:,}" for kind, count in sorted(kinds.items()))
    size = sum(s.size for s in mine)
    out.write(f"spool {directory}: {_plural(len(mine), 'file')}, {_plural(total, 'record')}")
    out.write(f" ({by_kind}), {size / 1024:,.1f} KiB\n" if total else f", {size / 1024:,.1f} KiB\n")
    for summary in mine:
        state = "running" if summary.running else "gone"
        line = f"  {summary.name.stem}.db  process {summary.name.pid} {state}"
        if summary.problem:
            line += f"  unreadable: {summary.problem}"
        else:
            line += f"  {_plural(sum(summary.kinds.values()), 'record')}"
            if summary.oldest is not None:
                line += f", oldest {utc_text(summary.oldest[0])}"
        out.write(line + "\n")
    oldest = min((s.oldest for s in mine if s.oldest is not None), default=None)
    if oldest is not None:
        out.write(f"oldest record: {oldest[1]} {oldest[2]!r} at {utc_text(oldest[0])}\n")
    if others:
        out.write(f"({_plural(len(others), 'file')} of other applications not shown)\n")
    return mine


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Execute ``moesif-users spool``; the exit status."""
    directory = os.path.abspath(args.directory)
    if not os.path.isdir(directory):
        print(f"moesif-users spool: {directory} is not a directory", file=sys.stderr)
        return 2
    if not args.send:
        tag = None if args.application_id is None else app_tag(args.application_id)
        print_summary(directory, tag, out)
        return 0
    try:
        application_id = resolve_application_id(args.application_id)
        base_url = resolve_base_url(args.base_url)
    except ConfigurationError as exc:
        print(f"moesif-users spool: {exc}", file=sys.stderr)
        return 2
    files = print_summary(directory, app_tag(application_id), out)
    running = sum(1 for summary in files if summary.running)
    return _send(directory, application_id, base_url, args.timeout, running, out)


def _send(
    directory: str, application_id: str, base_url: str, timeout: float, running: int, out: TextIO
) -> int:
    sender = get_sender(application_id, base_url, spool_dir=directory, shutdown_timeout=1.0)
    deadline = time.monotonic() + max(0.0, timeout)
    try:
        while True:
            delivered = sender.flush(timeout=max(0.0, deadline - time.monotonic()))
            left = _left(sender.stats()["spooled"], directory, application_id)
            if (delivered and not left) or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        stats = sender.stats()
    finally:
        sender.shutdown()
    out.write(f"sent {_plural(stats['sent'], 'record')}")
    if stats["failed"]:
        out.write(f", {stats['failed']:,} refused by the API")
    out.write(f"; {_plural(left, 'record')} left in the spool\n" if left else "\n")
    if running:
        out.write(f"{_plural(running, 'file')} of running processes left to them\n")
    if left:
        return 3
    return 1 if stats["failed"] else 0


def _left(spooled: int, directory: str, application_id: str) -> int:
    """Records still to send: this sender's, and those in files of processes that are gone."""
    left = spooled
    for name in list_names(directory, app_tag(application_id)):
        if name.pid == os.getpid():
            continue  # this process's own file: counted in ``spooled``
        if not claim(name.stem):  # being adopted by this process right now
            left += 1
            continue
        try:  # claimed: no other thread of this process opens its lock file meanwhile
            summary = summarize(name)
            if not summary.running:  # an unreadable one is left too (moved aside later)
                left += max(sum(summary.kinds.values()), 1 if summary.problem else 0)
        finally:
            release_claim(name.stem)
    return left
