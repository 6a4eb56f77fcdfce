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
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .._delivery.options import SenderOptions
from .._delivery.post import Answer, Outcome, Part, deliver_split, post_with_retries, refusal
from .._delivery.retry import DEFAULT_RETRY, RetryPolicy
from ..models import ValidationError
from ..transport import ApiError, UsersClient, compress
from .checkpoint import Checkpoint, save_checkpoint
from .items import Item, MalformedInputError, Skipped, Unparsed
from .kinds import DEFAULT_KIND, SendKind
from .progress import NullProgress, Progress, plural
from .rejects import RejectsFile

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_RETRY_TIMEOUT",
    "Backfill",
    "BackfillOptions",
    "RecordSource",
    "Summary",
]

DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_BATCH_BYTES = SenderOptions.max_batch_bytes  # the sender's: 1 MiB
DEFAULT_RETRY_TIMEOUT = 60.0
_QUEUE_BATCHES = 2
_MAX_REJECTS_PER_BATCH = 1000  # bounds memory when a long stretch of input is invalid
_MAX_ITEMS_PER_BATCH = 10_000  # settles (and checkpoints) long stretches of skipped items
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


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


@dataclass(frozen=True)
class BackfillOptions:
    """How to batch and send (see ``moesif-users send --help``)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    dry_run: bool = False
    max_rate: float | None = None  # records per second
    retry_timeout: float = DEFAULT_RETRY_TIMEOUT  # per batch, including waits
    gzip: bool = True
    retry: RetryPolicy = DEFAULT_RETRY  # the sender's backoff; its deadline is retry_timeout

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.max_batch_bytes < 1024:
            raise ValueError("max_batch_bytes must be at least 1024")
        if self.max_rate is not None and self.max_rate <= 0:
            raise ValueError("max_rate must be positive")
        if self.retry_timeout < 0:
            raise ValueError("retry_timeout must not be negative")


@dataclass
class Summary:
    """The outcome of one run; counts are for this run unless named ``total_*``."""

    source: str
    dry_run: bool
    skipped: int = 0  # records settled by earlier runs and skipped
    read: int = 0  # records read by this run
    sent: int = 0  # records the API confirmed (dry run: valid records)
    invalid: int = 0  # rejected before sending (rejects file)
    failed: int = 0  # refused by the API, or not delivered after retries
    batches: int = 0
    retries: int = 0
    elapsed: float = 0.0
    position: int = 0  # records settled in total: where a rerun resumes
    total_sent: int = 0
    total_invalid: int = 0
    total_failed: int = 0
    earlier_rejects: bool = False  # the rejects file holds records rejected by earlier runs
    stopped: str | None = None  # why sending stopped before the end of the input
    malformed: str | None = None  # the input broke off here (records before it settled)
    interrupted: bool = False

    @property
    def complete(self) -> bool:
        """Whether the whole input was settled."""
        return self.stopped is None and self.malformed is None and not self.interrupted

    @property
    def exit_status(self) -> int:
        """0 all delivered; 1 invalid or refused records (in this run or an earlier one it
        resumed); 2 malformed input; 3 sending stopped (API unreachable past the retry
        budget, or refusing the credentials); 130 interrupted."""
        if self.interrupted:
            return 130
        if self.stopped is not None:
            return 3
        if self.malformed is not None:
            return 2
        return 1 if self.rejected else 0

    @property
    def rejected(self) -> bool:
        """Whether any record was invalid or refused, in this run or the runs it resumed."""
        return bool(
            self.invalid
            or self.failed
            or self.total_invalid
            or self.total_failed
            or self.earlier_rejects
        )


_Reject = tuple[Any, str | None, str, Any]  # key, field, message, raw record


@dataclass
class _Batch:
    end: int  # position after this batch's last record
    cursor: Any  # key of the last record read
    keys: list[Any]
    parts: list[bytes]
    rejects: list[_Reject]
    final: bool = False  # the end of the input: the run is complete once this settles
    body: bytes = b""
    encoding: str | None = None


class _Filling:
    """The batch being read: its records as JSON so far, and the rejects among them."""

    __slots__ = ("keys", "parts", "rejects", "size", "start")

    def __init__(self, start: int) -> None:
        self.start = start  # the position it starts after
        self.keys: list[Any] = []
        self.parts: list[bytes] = []
        self.rejects: list[_Reject] = []
        self.size = 0  # JSON bytes of the parts, with a comma each

    def add(self, key: Any, data: bytes) -> None:
        self.keys.append(key)
        self.parts.append(data)
        self.size += len(data) + 1

    def batch(self, end: int, cursor: Any, *, final: bool = False) -> _Batch:
        """Sealed: ``end`` is the position after its last item, ``cursor`` that item's key."""
        return _Batch(end, cursor, self.keys, self.parts, self.rejects, final=final)


class _Stop(Exception):
    """The sender must stop: the reason is the message."""


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
        self._queue: queue.Queue[_Batch | None] = queue.Queue(_QUEUE_BATCHES)
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
            sender = threading.Thread(target=self._sender, name="moesif-backfill", daemon=True)
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
        batch_size = self._records_per_batch()
        max_bytes = self.options.max_batch_bytes - 2  # the brackets
        pacer = _Pacer(self.options.max_rate)
        stopping = self._stopping
        encoded = self._encoded
        position = self.state.position
        key: Any = self.state.cursor
        previous_key = key
        filling = _Filling(position)
        finished = False
        try:
            for key, value, raw in items:
                position += 1
                data = encoded(key, value, raw, filling.rejects)
                if data is not None:
                    if filling.size + len(data) + 1 > max_bytes:  # full before this record
                        self._seal(filling.batch(position - 1, previous_key), pacer)
                        filling = _Filling(position - 1)
                    filling.add(key, data)
                previous_key = key
                if (
                    len(filling.parts) >= batch_size
                    or len(filling.rejects) >= _MAX_REJECTS_PER_BATCH
                    or position - filling.start >= _MAX_ITEMS_PER_BATCH
                ):
                    self._seal(filling.batch(position, key), pacer)
                    filling = _Filling(position)
                    if stopping.is_set():
                        return
            finished = True
        except MalformedInputError as exc:
            self.summary.malformed = str(exc)
        finally:
            # What was read settles too (on a malformed input: everything before the fault).
            if not stopping.is_set():
                self._seal(filling.batch(position, key, final=finished), pacer)

    def _records_per_batch(self) -> int:
        options = self.options
        if options.max_rate is None:
            return options.batch_size
        # At least one batch a second: smooth, not bursty.
        return min(options.batch_size, max(1, int(options.max_rate)))

    def _encoded(self, key: Any, value: Any, raw: Any, rejects: list[_Reject]) -> bytes | None:
        """The record as JSON; None when skipped, or when rejected (added to ``rejects``)."""
        if type(value) is Unparsed:
            rejects.append((key, value.field, value.message, raw))
            return None
        if value is Skipped:
            return None
        kind = self.kind
        try:
            # The noun names a record that is not an object: "user", "company".
            data = _ENCODE(kind.normalize(value, kind.noun)).encode()
        except ValidationError as exc:
            rejects.append((key, exc.field, exc.message, raw))
            return None
        except (TypeError, ValueError, RecursionError) as exc:
            rejects.append((key, None, str(exc) or type(exc).__name__, raw))
            return None
        limit = self.options.max_batch_bytes
        if len(data) + 1 > limit - 2:  # a comma, the brackets
            message = f"{len(data)} bytes as JSON, over the batch limit of {limit} bytes"
            rejects.append((key, None, message, raw))
            return None
        return data

    def _seal(self, batch: _Batch, pacer: _Pacer) -> None:
        self.summary.read = batch.end - self.summary.skipped
        if self.options.dry_run:
            self._settle_dry(batch)
            return
        if batch.parts:
            body = b"[" + b",".join(batch.parts) + b"]"
            batch.body, batch.encoding = compress(body) if self.options.gzip else (body, None)
            pacer.wait(len(batch.parts), self._stopping)
        self._put(batch)

    def _put(self, batch: _Batch | None, *, final: bool = False) -> None:
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

    def _settle_dry(self, batch: _Batch) -> None:
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

    def _sender(self) -> None:
        try:
            while True:
                batch = self._queue.get()
                if batch is None:
                    break
                if self._stopping.is_set():
                    continue  # stopped (failure or interrupt): queued batches stay unsent
                try:
                    refused = self._deliver(batch) if batch.parts else []
                except _Stop as exc:
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

    def _settle(self, batch: _Batch, refused: list[tuple[int, str | None, str]]) -> None:
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

    def _deliver(self, batch: _Batch) -> list[tuple[int, str | None, str]]:
        """Send a batch; returns the records the API refused as (index, field, message).

        Raises ``_Stop`` when the API stays unavailable or refuses the batch as a whole.
        """
        refused: list[tuple[int, str | None, str]] = []
        whole = len(batch.parts)

        def post(part: Part) -> Answer:
            if len(part) == whole:  # encoded (and gzipped) ahead, while the last one was sent
                return self._post(batch.body, batch.encoding)
            body = b"[" + b",".join(batch.parts[i] for i in part) + b"]"
            return self._post(*(compress(body) if self.options.gzip else (body, None)))

        def settle(part: Part, answer: Answer) -> None:
            outcome = answer.outcome
            if outcome is Outcome.SENT:
                self.summary.batches += 1
            elif outcome is Outcome.TOO_LARGE:
                refused.append((part[0], None, "too large (413)"))
            elif outcome is Outcome.REJECTED and answer.status in (400, 422):
                _, field_name, message = refusal(answer)
                refused.extend((index, field_name, message) for index in part)
            elif outcome is Outcome.REJECTED:
                error = ApiError(answer.status or 0, answer.text)
                raise _Stop(f"the API refused the batch: {error}")
            elif self._stopping.is_set():
                raise _Stop(f"interrupted while retrying: {answer.error}")
            else:
                attempts = plural(answer.attempts, "attempt")
                raise _Stop(f"not delivered after {attempts}: {answer.error}")

        deliver_split(whole, post, settle, bisect_unnamed=True)
        return refused

    def _post(self, body: bytes, encoding: str | None) -> Answer:
        """POST with retries until 2xx, a final answer, or the retry budget ends."""
        client = self.client
        assert client is not None
        path = self.kind.batch_path
        deadline = time.monotonic() + self.options.retry_timeout
        answer = post_with_retries(
            lambda: client.post_body(path, body, encoding),
            self.options.retry,
            deadline=lambda: deadline,
            now=time.monotonic,
            wait_until=lambda moment: not self._stopping.wait(max(0.0, moment - time.monotonic())),
        )
        self.summary.retries += max(0, answer.attempts - 1)
        return answer


class _Pacer:
    """Holds batches back so that records go out at no more than ``rate`` per second."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.sent = 0
        self.started = time.monotonic()

    def wait(self, count: int, stop: threading.Event) -> None:
        if self.rate is None:
            return
        due = self.started + self.sent / self.rate
        self.sent += count
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)
