"""``moesif-users send [--kind companies] FILE|-``: resume decisions, sending, summary.

:func:`.arguments.configure_parser` adds the arguments, ``run`` executes them and
returns the exit status (see :attr:`Summary.exit_status`; 2 for usage, configuration or
malformed-input errors found before anything was sent). The Django ``moesif_users_backfill`` command
reuses :func:`execute` (and :func:`.arguments.add_sending_arguments`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TextIO

from .._options.endpoint import resolve_application_id, resolve_base_url
from ..errors import ConfigurationError
from ..transport import UsersClient
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .items import MalformedInputError
from .kinds import DEFAULT_KIND, SEND_KINDS, SendKind
from .options import BackfillOptions
from .progress import make_progress, plural
from .readers import open_reader
from .rejects import RejectsFile
from .runner import Backfill, RecordSource
from .summary import Summary

__all__ = ["Output", "execute", "run"]


class Output(Protocol):
    """Where the summary goes: a text stream (or Django's ``OutputWrapper``)."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


_PROG = "moesif-users send"


def run(args: argparse.Namespace) -> int:
    """Execute ``moesif-users send`` with parsed ``args``; returns the exit status."""
    path: str = args.file
    kind = SEND_KINDS[args.kind]
    try:
        reader = open_reader(path, args.format, kind)
    except (OSError, MalformedInputError) as exc:
        return _error(_describe_error(exc, path))
    with reader:
        if path == "-":
            source_id, default_checkpoint, stem = "<stdin>", None, "stdin"
            info = None
        else:
            source_id = os.path.abspath(path)
            default_checkpoint = f"{path}.checkpoint"
            stem = path
            info = os.stat(path) if os.path.isfile(path) else None
        fingerprint = (info.st_size, info.st_mtime_ns) if info is not None else None
        return execute(
            reader,
            args,
            source_id=source_id,
            default_checkpoint=default_checkpoint,
            default_rejects=f"{stem}.rejects.jsonl",
            key_name="line",
            fingerprint=fingerprint,
            kind=kind,
        )


def execute(
    source: RecordSource,
    args: argparse.Namespace,
    *,
    source_id: str,
    default_checkpoint: str | None,
    default_rejects: str,
    key_name: str,
    fingerprint: tuple[int, int] | None = None,
    stdout: Output | None = None,
    stderr: TextIO | None = None,
    prog: str = _PROG,
    kind: SendKind = DEFAULT_KIND,
) -> int:
    """Run a backfill of ``source`` (records of ``kind``) as the parsed sending options ask;
    returns the exit status."""
    out: Output = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        settings = _settings(args)
    except (ValueError, ConfigurationError) as exc:
        return _error(str(exc), err, prog)
    try:
        plan = _plan(args, kind, source_id, fingerprint, default_checkpoint, default_rejects)
    except CheckpointError as exc:
        return _error(str(exc), err, prog)
    if plan.settled:
        return _nothing_to_do(plan, out)
    if plan.changed:
        err.write(
            f"{prog}: note: {source_id} changed since checkpoint {plan.checkpoint_path} "
            f"was written; resuming after its first {plan.state.position:,} records "
            "(--restart sends everything again)\n"
        )
    summary = _send(source, args, settings, plan, key_name=key_name, kind=kind, err=err, prog=prog)
    out.write(
        format_summary(summary, plan.rejects_path, plan.checkpoint_path, settings.base_url, kind)
    )
    out.flush()
    return summary.exit_status


class _Settings(NamedTuple):
    """The sending options, checked: how to batch and pace, and where to send."""

    options: BackfillOptions
    base_url: str
    application_id: str | None  # None on a dry run, which sends nothing


def _settings(args: argparse.Namespace) -> _Settings:
    """Raises ValueError or ConfigurationError (exit status 2) for an unusable option."""
    dry_run: bool = args.dry_run
    options = BackfillOptions(
        batch_size=args.batch_size,
        max_batch_bytes=args.max_batch_bytes,
        dry_run=dry_run,
        max_rate=args.max_rate,
        retry_timeout=args.retry_timeout,
        gzip=not args.no_gzip,
    )
    base_url = resolve_base_url(args.base_url)
    application_id = None if dry_run else resolve_application_id(args.application_id)
    return _Settings(options, base_url, application_id)


@dataclass
class _Plan:
    """Where a run starts and what it writes, decided before anything is read."""

    state: Checkpoint  # what earlier runs settled: the run continues at state.position
    checkpoint_path: Path | None  # None: none read or written
    rejects_path: Path
    rejects_offset: int | None = None  # the rejects of earlier runs end here (None: none kept)
    settled: bool = False  # an earlier run settled every record: nothing to send
    changed: bool = False  # the input changed since the checkpoint was written


def _plan(
    args: argparse.Namespace,
    kind: SendKind,
    source_id: str,
    fingerprint: tuple[int, int] | None,
    default_checkpoint: str | None,
    default_rejects: str,
) -> _Plan:
    """Start at the beginning, at ``--resume-from``, or after the checkpoint's records.

    Raises :class:`CheckpointError` for a checkpoint that cannot be read or is another run's.
    """
    checkpoint_path = _checkpoint_path(args, default_checkpoint)
    rejects_path = _rejects_path(args, default_rejects)
    size, mtime = fingerprint if fingerprint is not None else (None, None)
    state = Checkpoint(source_id, kind.name, source_size=size, source_mtime_ns=mtime)
    fresh = _Plan(state, checkpoint_path, rejects_path)
    if args.resume_from is not None:
        state.position = args.resume_from
        fresh.rejects_offset = _size(rejects_path)  # keep what earlier runs rejected
        return fresh
    if checkpoint_path is None or args.restart:
        return fresh
    saved = load_checkpoint(checkpoint_path)
    if saved is None:
        return fresh
    _check_same_run(saved, checkpoint_path, kind, source_id)
    changed = fingerprint is not None and (
        (saved.source_size, saved.source_mtime_ns) != fingerprint
    )
    if saved.complete and not changed:
        return _Plan(saved, checkpoint_path, rejects_path, settled=True)
    saved.source_size, saved.source_mtime_ns = size, mtime
    saved.complete = False
    return _Plan(saved, checkpoint_path, rejects_path, saved.rejects_offset, changed=changed)


def _checkpoint_path(args: argparse.Namespace, default: str | None) -> Path | None:
    if args.dry_run or args.no_checkpoint:
        return None
    chosen = args.checkpoint or default
    return Path(chosen) if chosen else None


def _rejects_path(args: argparse.Namespace, default: str) -> Path:
    if args.rejects:
        return Path(args.rejects)
    return Path(default.replace(".rejects.", ".dry-run.rejects.") if args.dry_run else default)


def _check_same_run(saved: Checkpoint, path: Path, kind: SendKind, source_id: str) -> None:
    """Raise :class:`CheckpointError` unless ``saved`` was written sending this input."""
    if saved.kind != kind.name:
        raise CheckpointError(
            f"checkpoint {path} belongs to a --kind {saved.kind} run, and "
            f"this run sends {kind.name}; pass --kind {saved.kind} to resume it, "
            f"another --checkpoint, or --restart to send {kind.name} from the start"
        )
    if saved.source != source_id:
        raise CheckpointError(
            f"checkpoint {path} was written for {saved.source}, not "
            f"{source_id}; pass another --checkpoint or --restart"
        )


def _nothing_to_do(plan: _Plan, out: Output) -> int:
    """Say that an earlier run settled every record; returns that run's exit status."""
    saved = plan.state
    rejected = bool(saved.invalid or saved.failed or saved.rejects_offset)
    records = (
        f"the only record of {saved.source} was"
        if saved.position == 1
        else f"all {saved.position:,} records of {saved.source} were"
    )
    out.write(
        f"Nothing to do: {records} settled by an earlier run (checkpoint "
        f"{plan.checkpoint_path}"
        + (
            f"; {saved.invalid:,} invalid, {saved.failed:,} failed: see {plan.rejects_path}"
            if rejected
            else ""
        )
        + "); pass --restart to send them again.\n"
    )
    return 1 if rejected else 0


def _send(
    source: RecordSource,
    args: argparse.Namespace,
    settings: _Settings,
    plan: _Plan,
    *,
    key_name: str,
    kind: SendKind,
    err: TextIO,
    prog: str,
) -> Summary:
    """Run the backfill as planned; SIGINT or SIGTERM stops it gracefully (resumable)."""
    progress = make_progress(
        args.progress, err, label=kind.name, noun=kind.noun, interval=args.progress_interval
    )
    client = None
    if not args.dry_run:
        client = UsersClient(
            settings.application_id, settings.base_url, timeout=args.timeout, gzip=False
        )
    try:
        rejects = RejectsFile(
            plan.rejects_path, key_name=key_name, resume_offset=plan.rejects_offset
        )
        backfill = Backfill(
            source,
            client=client,
            rejects=rejects,
            state=plan.state,
            checkpoint_path=plan.checkpoint_path,
            options=settings.options,
            progress=progress,
            kind=kind,
        )
        if plan.state.position:
            err.write(f"{prog}: resuming after record {plan.state.position:,}\n")
        with _graceful_stop(backfill.stop):
            return backfill.run()
    finally:
        if client is not None:
            client.close()


def format_summary(
    summary: Summary,
    rejects: Path,
    checkpoint: Path | None,
    base_url: str,
    kind: SendKind = DEFAULT_KIND,
) -> str:
    """The human-readable end-of-run report."""
    rate = summary.sent / summary.elapsed if summary.elapsed > 0 else 0.0
    verb = "valid (dry run, nothing sent)" if summary.dry_run else "sent"
    lines = [
        f"{summary.source}" + ("" if summary.dry_run else f" -> {base_url}"),
        f"  {verb}: {kind.count(summary.sent)}"
        + ("" if summary.dry_run else f" in {plural(summary.batches, 'request')}")
        + f", {summary.elapsed:.1f} s ({rate:,.0f} {kind.name}/s)",
        f"  invalid: {summary.invalid:,}" + (f" (see {rejects})" if summary.invalid else ""),
        f"  failed:  {summary.failed:,}"
        + (
            f" (refused {kind.name} are in {rejects})"
            if summary.failed and summary.complete
            else ""
        ),
    ]
    if summary.retries:
        lines.append(f"  retries: {summary.retries:,}")
    if summary.skipped:
        lines.append(f"  resumed after record {summary.skipped:,} (settled by earlier runs)")
    earlier = (summary.total_sent, summary.total_invalid, summary.total_failed) != (
        summary.sent,
        summary.invalid,
        summary.failed,
    )
    if earlier and not summary.dry_run:
        lines.append(
            f"  all runs: {summary.total_sent:,} sent, {summary.total_invalid:,} invalid, "
            f"{summary.total_failed:,} failed"
            + (f" (see {rejects})" if summary.total_invalid or summary.total_failed else "")
        )
    elif summary.earlier_rejects and not (summary.invalid or summary.failed):
        lines.append(f"  earlier runs rejected records (see {rejects})")
    again = f"Run the same command again to resume after record {summary.position:,}" + (
        f" (checkpoint {checkpoint})."
        if checkpoint is not None
        else f" (pass --resume-from {summary.position})."
    )
    if summary.malformed is not None:
        lines.append(f"  STOPPED, malformed input: {summary.malformed}")
        lines.append(f"  Records before it were settled. Fix the input, then: {again}")
    if summary.stopped is not None:
        lines.append(f"  STOPPED: {summary.stopped}")
        lines.append(f"  {again}")
    if summary.interrupted:
        lines.append(f"  INTERRUPTED. {again}")
    return "\n".join(lines) + "\n"


@contextmanager
def _graceful_stop(stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT/SIGTERM stop the run gracefully; a second SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _describe_error(exc: Exception, path: str) -> str:
    if isinstance(exc, OSError):
        return f"cannot read {path}: {exc.strerror or exc}"
    return str(exc)


def _error(message: str, stream: TextIO | None = None, prog: str = _PROG) -> int:
    (stream if stream is not None else sys.stderr).write(f"{prog}: error: {message}\n")
    return 2
