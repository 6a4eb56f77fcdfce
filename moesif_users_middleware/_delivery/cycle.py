"""One send cycle: drain the buffer, skip what is unchanged, batch, post, settle every record.

Records of each kind go to that kind's batch endpoint, never mixed. Every record ends a
cycle settled one way: delivered; skipped as unchanged; kept for a later cycle (the API
was unavailable until the batch's deadline: merged back *under* newer updates); or lost
(refused by the API, too large, unserializable), counted as ``failed`` or ``dropped``
with one log line. A key leaves "in flight" once all its records are settled.

With a spool (:mod:`.spool`) the records come from its file, a chunk at a time, and go
back there: the cycle hands its outcomes to a :class:`.spool_send.SpoolCycle` instead of
the memory buffer (both have ``merge_back`` and ``release``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .._transport.body import compress
from .._transport.response import RawResponse
from .batches import Batch, Item, pack, serialize
from .buffer import Entry, Timed
from .kinds import KINDS, Key, RecordKind
from .post import Answer, Outcome, Part, deliver_split, post_with_retries, refusal

if TYPE_CHECKING:
    from .engine import Engine
    from .worker import Worker

__all__ = ["run_cycle"]

logger = logging.getLogger("moesif_users_middleware.sender")
_monotonic = time.monotonic


class Returns(Protocol):
    """Where a cycle's records go back: the memory buffer, or the spool's cycle."""

    def merge_back(self, key: Key, id_field: str, records: list[Timed]) -> None: ...
    def release(self, keys: Iterable[Key]) -> None: ...


@dataclass
class _Cycle:
    """Book-keeping for one cycle."""

    returns: Returns
    drained: dict[Key, Entry] = field(default_factory=dict)  # the chunk being sent
    remaining: dict[Key, int] = field(default_factory=dict)  # records not yet settled, per key
    lost: bool = False
    requeued: int = 0
    gave_up: bool = False
    released: list[Key] = field(default_factory=list)


def run_cycle(engine: Engine, worker: Worker) -> None:
    """Send everything pending once (the worker's thread, or shutdown's)."""
    spooled = engine.spool.cycle() if engine.spool is not None else None
    with engine.lock:
        due = engine.unchanged.due(_monotonic())
        if due:
            engine.buffer.reassert(due)
        drained = engine.buffer.drain() if spooled is None else {}
        worker.cycles_started += 1
        number = worker.cycles_started
        worker.cycle_active = True
        worker.urgent = False
    state = _Cycle(engine.buffer if spooled is None else spooled)
    try:
        for chunk in [drained] if spooled is None else spooled.chunks():
            state.drained = chunk
            state.remaining = {key: 1 + len(entry.tokens or ()) for key, entry in chunk.items()}
            _send(engine, worker, chunk, state)
            if spooled is not None:
                spooled.commit()
            if state.gave_up:
                break
    finally:
        _end(engine, worker, state, number)
        if spooled is not None:
            spooled.finish()


def _end(engine: Engine, worker: Worker, state: _Cycle, number: int) -> None:
    now = _monotonic()
    returns = state.returns
    with engine.lock:
        leftover = [key for key, count in state.remaining.items() if count > 0]
        for key in leftover:  # only after an unexpected error: keep those records
            entry = state.drained[key]
            returns.merge_back(key, entry.id_field, entry.timed_records())
            state.requeued += 1
        returns.release(leftover)
        worker.cycles_done = number
        worker.cycle_active = False
        if state.requeued:
            worker.failed_cycles += 1
            worker.backoff_until = now + engine.retry.cycle_backoff(
                worker.failed_cycles, engine.rng
            )
        else:
            worker.failed_cycles = 0
            worker.clean_cycle = number
        if state.lost:
            worker.loss_cycle = number
        worker.next_cycle_at = now + worker.interval()
        engine.cond.notify_all()


def _send(engine: Engine, worker: Worker, drained: dict[Key, Entry], state: _Cycle) -> None:
    if not drained:
        return
    items, errors = serialize(drained.items())
    now = _monotonic()
    unchanged = engine.unchanged
    to_send: dict[str, list[Item]] = {}
    skipped: list[Item] = []
    for item in items:
        if item.main and unchanged.unchanged(item.key, item.fingerprint, now):
            skipped.append(item)
        else:
            to_send.setdefault(item.key[0], []).append(item)
    options = engine.options
    packed = {
        kind: pack(kind_items, options.batch_size, options.max_batch_bytes)
        for kind, kind_items in to_send.items()
    }
    too_large = [item for _, large in packed.values() for item in large]
    with engine.lock:
        engine.buffer.observe(sum(len(item.text) for item in items), len(drained))
        tallies = engine.tallies
        for item in skipped:
            tallies[item.key[0]].skipped_unchanged += 1
            unchanged.touch(item.key, item.stamp, item.stamp_text)
        for key, _, _ in errors:
            tallies[key[0]].failed += 1
        for item in too_large:
            tallies[item.key[0]].dropped += 1
        _settle_locked(engine, state, skipped)
        _settle_locked(engine, state, too_large)
        _settle_locked(engine, state, [Item(key, record, "", False) for key, record, _ in errors])
        if errors or too_large:
            state.lost = True
            unchanged.forget_all()  # what was lost may be captured again
    if errors:
        engine.warnings.warning(
            "unserializable",
            "Moesif users sender: %d records could not be serialized and were dropped "
            "(was a queued dict changed after queue_user?): %s",
            len(errors),
            errors[0][2],
        )
    if too_large:
        engine.warnings.warning(
            "too-large",
            "Moesif users sender: %d records larger than max_batch_bytes (%d) dropped",
            len(too_large),
            options.max_batch_bytes,
        )
    for kind, (batches, _) in packed.items():
        for batch in batches:
            _deliver(engine, worker, KINDS[kind], batch, state)


def _deliver(engine: Engine, worker: Worker, kind: RecordKind, batch: Batch, state: _Cycle) -> None:
    """Send one batch (split on 413, less a record a 400 names) and settle every record."""
    items = batch.items

    def post(part: Part) -> Answer:
        if state.gave_up:
            return Answer(Outcome.GAVE_UP, problem="deadline")
        return _post(engine, worker, kind, [items[i] for i in part])

    def settle(part: Part, answer: Answer) -> None:
        if answer.outcome is Outcome.GAVE_UP:
            state.gave_up = True
        elif answer.outcome is not Outcome.SENT:
            _log_refused(engine, answer, len(part))
        _settle(engine, state, kind, [items[i] for i in part], answer.outcome)

    deliver_split(len(items), post, settle, bisect_unnamed=False)


def _post(engine: Engine, worker: Worker, kind: RecordKind, items: list[Item]) -> Answer:
    """POST these records with retries inside the batch deadline."""
    path = kind.batch_path
    body = ("[" + ",".join(item.text for item in items) + "]").encode("ascii")
    encoding: str | None = None
    options = engine.options
    if options.gzip:
        body, encoding = compress(body)
    policy = engine.retry
    batch_deadline = _monotonic() + policy.batch_deadline
    client = worker.connection()

    def send() -> RawResponse:
        # The batch deadline decides whether an attempt starts, not how long it may take:
        # a late attempt cut short could time out after the API stored the batch, and the
        # batch would be sent twice. Only shutdown cuts it short.
        limit = min(options.timeout, worker.deadline_cap() - _monotonic())
        return client.post_body(path, body, encoding, timeout=limit)

    def on_failure(attempt: int, problem: str, retry_after: float | None) -> None:
        if retry_after is not None:
            worker.not_before = _monotonic() + policy.retry_after(retry_after)
        if attempt == 0:  # at once, not only when the retries run out (~36 s later)
            engine.warnings.warning(
                "post-failed",
                "Moesif users sender: sending %d records to %s failed (%s); retrying with "
                "backoff, the records are kept. Check base_url and the network if this "
                "goes on.",
                len(items),
                client.base_url,
                problem,
            )
        else:
            logger.debug("retrying a batch of %d (%s), attempt %d", len(items), problem, attempt)

    answer = post_with_retries(
        send,
        policy,
        deadline=lambda: min(batch_deadline, worker.deadline_cap()),
        now=_monotonic,
        wait_until=lambda moment: worker.sleep_until(moment, batch_deadline),
        rng=engine.rng,
        on_failure=on_failure,
    )
    if answer.attempts > 1:
        with engine.lock:
            engine.tallies[kind.name].retries += answer.attempts - 1
    if answer.outcome is Outcome.GAVE_UP and answer.problem not in ("", "deadline"):
        engine.warnings.warning(
            "unavailable",
            "Moesif users sender: API unavailable (%s); %d records kept for a later attempt",
            answer.problem,
            len(items),
        )
    return answer


def _settle(
    engine: Engine, state: _Cycle, kind: RecordKind, items: list[Item], outcome: Outcome
) -> None:
    now = _monotonic()
    tally = engine.tallies[kind.name]
    with engine.lock:
        if outcome is Outcome.SENT:
            tally.sent += len(items)
            tally.batches += 1
            unchanged = engine.unchanged
            for item in items:
                if item.main:
                    id_field = KINDS[item.key[0]].id_field
                    unchanged.delivered(item.key, item.fingerprint, now, item.timed, id_field)
        elif outcome is Outcome.GAVE_UP:
            by_key: dict[Key, list[Item]] = {}
            for item in items:
                by_key.setdefault(item.key, []).append(item)
            for key, mine in by_key.items():
                id_field = KINDS[key[0]].id_field
                state.returns.merge_back(key, id_field, [item.timed for item in mine])
            state.requeued += len(items)
        else:
            tally.failed += len(items)
            state.lost = True
            engine.unchanged.forget_all()  # what was lost may be captured again
        _settle_locked(engine, state, items)


def _settle_locked(engine: Engine, state: _Cycle, items: list[Item]) -> None:
    remaining = state.remaining
    done: list[Key] = []
    for item in items:
        count = remaining[item.key] - 1
        remaining[item.key] = count
        if count == 0:
            done.append(item.key)
    if done:
        state.returns.release(done)


def _log_refused(engine: Engine, answer: Answer, count: int) -> None:
    status = answer.status
    if status == 401:
        logger.error(
            "Moesif rejected the application id (HTTP 401); %d records dropped. "
            "Check application_id / MOESIF_APPLICATION_ID.",
            count,
        )
        return
    if status == 413:
        message = "a single record was rejected as too large (HTTP 413); dropped"
        engine.warnings.warning("413", "Moesif users sender: %s", message)
        return
    detail = refusal(answer)[2] if status in (400, 422) else answer.text[:300]
    engine.warnings.warning(
        f"http-{status}",
        "Moesif users sender: the API rejected %d records with HTTP %s; dropped, not retried: %s",
        count,
        status,
        detail,
    )
