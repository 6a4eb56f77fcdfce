"""The backfill pipeline: validate -> batch -> send with retries -> checkpoint.

The calling thread reads records, validates them (the kind's validator:
``normalize_user`` or ``normalize_company``, see :mod:`.kinds`), serializes and gzips
the next batch while one sender thread posts the previous one over a single reused
connection (a queue of two batches in between bounds memory). The sender thread is the
only writer of the rejects file and the checkpoint, and it settles batches in input
order, so the checkpoint always describes a prefix of the input:

- a batch answered 2xx advances the checkpoint past its last record (and past the
  invalid records read before it);
- 408/429/5xx and network errors are retried (exponential backoff with full jitter,
  ``Retry-After`` honoured up to a cap) until ``retry_timeout`` runs out -- then the run
  stops, the checkpoint stays at the last confirmed batch, and a rerun resumes there;
- 413 splits the batch; 400/422 drops the record the API names (``index``) or, without
  one, bisects down to the single refused record, which goes to the rejects file;
- any other 4xx (401, 403, 404, ...) stops the run: retrying cannot fix credentials.

This module runs the two threads and the queue between them, and settles batches;
:mod:`.batching` builds the batches, :mod:`.posting` posts one, :mod:`.options` and
:mod:`.summary` hold what a run takes and returns.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from ..transport import UsersClient
from .batching import (
    MAX_ITEMS_PER_BATCH,
    MAX_REJECTS_PER_BATCH,
    Batch,
    Filling,
    Pacer,
    batch_body,
    record_encoder,
    records_per_batch,
)
from .checkpoint import Checkpoint, save_checkpoint
from .items import Item, MalformedInputError
from .kinds import DEFAULT_KIND, SendKind
from .options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_RETRY_TIMEOUT,
    BackfillOptions,
)
from .posting import BatchPoster, Refusal, StopSending
from .progress import NullProgress, Progress
from .rejects import RejectsFile
from .summary import Summary

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_RETRY_TIMEOUT",
    "Backfill",
    "BackfillOptions",
    "RecordSource",
    "Summary",
]

_QUEUE_BATCHES = 2


class RecordSource(Protocol):
    """What the pipeline reads: a file reader or the Django user source."""

    name: str

    def records(self, skip: int, cursor: Any) -> Iterator[Item]:
        """Items after the first ``skip`` records (or after ``cursor``, if the source can)."""
        ...

    def estimated_total(self, done: int) -> int | None:
        """Records in the whole input, if known."""
        ...

    def raw_record(self, raw: Any) -> Any:
        """The rejects-file form of an item's ``raw``."""
        ...


class Backfill:
    """One backfill run over ``source``; call :meth:`run` once, :meth:`stop` from anywhere."""

    def __init__(
        self,
        source: RecordSource,
        *,
        client: UsersClient | None,
        rejects: RejectsFile,
        state: Checkpoint,
        checkpoint_path: Path | None = None,
        options: BackfillOptions | None = None,
        progress: Progress | None = None,
        kind: SendKind = DEFAULT_KIND,
    ) -> None:
        self.source = source
        self.kind = kind  # users or companies: the validator and the endpoint
        self.client = client
        self.rejects = rejects
        self.state = state  # updated as batches settle; saved to checkpoint_path
        self.checkpoint_path = checkpoint_path
        self.options = options or BackfillOptions()
        self.progress = progress or NullProgress()
        if client is None and not self.options.dry_run:
            raise ValueError("a client is required unless dry_run is set")
        self.summary = Summary(source.name, self.options.dry_run)
        self._stopping = threading.Event()  # stop reading; set by stop() or a failure
        self._queue: queue.Queue[Batch | None] = queue.Queue(_QUEUE_BATCHES)
        self._sender_error: BaseException | None = None

    def stop(self) -> None:
        """Stop gracefully: no new batches; the one in flight settles; checkpoint kept."""
        self.summary.interrupted = True
        self._stopping.set()

    def run(self) -> Summary:
        """Process the source; returns the summary (never raises for bad records)."""
        summary = self.summary
        summary.skipped = self.state.position
        started = time.monotonic()
        self.progress.start(self.source.estimated_total(self.state.position), self.state.position)
        sender = None
        if not self.options.dry_run:
            assert self.client is not None  # checked by __init__
            poster = BatchPoster(self.client, self.kind, self.options, self._stopping, summary)
            sender = threading.Thread(
                target=self._sender, args=(poster,), name="moesif-backfill", daemon=True
            )
            sender.start()
        try:
            self._read(self.source.records(self.state.position, self.state.cursor))
        finally:
            if sender is not None:
                self._put(None, final=True)
                sender.join()
            summary.elapsed = time.monotonic() - started
            self.rejects.close()
            self.progress.finish()
        if self._sender_error is not None:
            raise self._sender_error
        summary.position = self.state.position
        summary.total_sent = self.state.sent
        summary.total_invalid = self.state.invalid
        summary.total_failed = self.state.failed
        summary.earlier_rejects = self.rejects.kept > 0
        return summary

    # -- reading (calling thread) -------------------------------------------------------

    def _read(self, items: Iterable[Item]) -> None:
        batch_size = records_per_batch(self.options)
        max_bytes = self.options.max_batch_bytes - 2  # the brackets
        pacer = Pacer(self.options.max_rate)
        stopping = self._stopping
        encoded = record_encoder(self.kind, self.options.max_batch_bytes)
        position = self.state.position
        key: Any = self.state.cursor
        previous_key = key
        filling = Filling(position)
        finished = False
        try:
            for key, value, raw in items:
                position += 1
                data = encoded(key, value, raw, filling.rejects)
                if data is not None:
                    if filling.size + len(data) + 1 > max_bytes:  # full before this record
                        self._seal(filling.batch(position - 1, previous_key), pacer)
                        filling = Filling(position - 1)
                    filling.add(key, data)
                previous_key = key
                if (
                    len(filling.parts) >= batch_size
                    or len(filling.rejects) >= MAX_REJECTS_PER_BATCH
                    or position - filling.start >= MAX_ITEMS_PER_BATCH
                ):
                    self._seal(filling.batch(position, key), pacer)
                    filling = Filling(position)
                    if stopping.is_set():
                        return
            finished = True
        except MalformedInputError as exc:
            self.summary.malformed = str(exc)
        finally:
            # What was read settles too (on a malformed input: everything before the fault).
            if not stopping.is_set():
                self._seal(filling.batch(position, key, final=finished), pacer)

    def _seal(self, batch: Batch, pacer: Pacer) -> None:
        self.summary.read = batch.end - self.summary.skipped
        if self.options.dry_run:
            self._settle_dry(batch)
            return
        if batch.parts:
            batch.body, batch.encoding = batch_body(batch.parts, self.options.gzip)
            pacer.wait(len(batch.parts), self._stopping)
        self._put(batch)

    def _put(self, batch: Batch | None, *, final: bool = False) -> None:
        while True:
            if self._stopping.is_set():
                if not final:
                    return
                self._drain()  # the sender skips them anyway
            try:
                self._queue.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def _settle_dry(self, batch: Batch) -> None:
        for key, field_name, message, raw in batch.rejects:
            self.rejects.write(key, field_name, message, self.source.raw_record(raw))
        self.summary.sent += len(batch.parts)
        self.summary.invalid += len(batch.rejects)
        self.summary.batches += bool(batch.parts)
        state = self.state
        state.position = batch.end
        state.sent += len(batch.parts)
        state.invalid += len(batch.rejects)
        state.complete = batch.final
        self._report()

    # -- sending (sender thread) ----------------------------------------------------------

    def _sender(self, poster: BatchPoster) -> None:
        try:
            while True:
                batch = self._queue.get()
                if batch is None:
                    break
                if self._stopping.is_set():
                    continue  # stopped (failure or interrupt): queued batches stay unsent
                try:
                    refused = poster.deliver(batch) if batch.parts else []
                except StopSending as exc:
                    if not self.summary.interrupted:
                        self.summary.stopped = str(exc)
                        self.summary.failed += len(batch.parts)
                        self._stopping.set()
                        self._report()
                    continue
                self._settle(batch, refused)
        except BaseException as exc:  # a bug: surface it in the calling thread
            self._sender_error = exc
            self._stopping.set()
            self._drain()

    def _settle(self, batch: Batch, refused: list[Refusal]) -> None:
        source = self.source
        write = self.rejects.write
        for key, field_name, message, raw in batch.rejects:
            write(key, field_name, message, source.raw_record(raw))
        for index, field_name, message in refused:
            record = json.loads(batch.parts[index])
            write(batch.keys[index], field_name, f"refused by the API: {message}", record)
        summary = self.summary
        delivered = len(batch.parts) - len(refused)
        summary.sent += delivered
        summary.invalid += len(batch.rejects)
        summary.failed += len(refused)
        state = self.state
        state.position = batch.end
        state.cursor = batch.cursor
        state.sent += delivered
        state.invalid += len(batch.rejects)
        state.failed += len(refused)
        state.complete = batch.final
        state.rejects_offset = self.rejects.offset()
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, state)
        self._report()

    def _report(self) -> None:
        state = self.state
        self.progress.update(
            state.position,
            self.source.estimated_total(state.position),
            invalid=self.summary.invalid,
            failed=self.summary.failed,
        )
