"""Delivery: everything between "an update was accepted" and "the API confirmed it".

The arrows point one way, from the facade (:mod:`moesif_users_middleware.sender`) down:

- :mod:`.engine` holds deferred captures (a deque append on the request path) and
  finishes them in order by calling the function each one carries: it never looks inside;
- :mod:`.buffer` coalesces pending records per (kind, id), bounded by slots and bytes;
- :mod:`.unchanged` is the one place that decides "unchanged": a repeat of a key's last
  capture, or a record identical to what was last delivered for its key;
- :mod:`.batches` serializes records once and packs them by count and bytes;
- :mod:`.post` sends one batch: retries, ``Retry-After``, the deadline, 413 and 400
  splitting (the backfill command uses it too);
- :mod:`.worker` runs it: the thread, send cycles (:mod:`.cycle`), flush tickets,
  shutdown; :mod:`.flushes` waits for a flush, from a thread or a coroutine;
- :mod:`.spool` (opt-in, ``spool_dir``) keeps pending records on disk between the buffer
  and the send cycles, one file per process: its thread (:mod:`.spool_thread`) persists,
  :mod:`.spool_store` writes the file, :mod:`.spool_send` feeds the send cycles from it,
  :mod:`.spool_adopt` adopts the files of processes that are gone; the file's format is
  :mod:`.spool_db`, its name, lock and directory :mod:`.spool_dir`.

Records are plain wire-form dicts of one :class:`.kinds.RecordKind` (users; companies are
a second kind, not a copy).
"""
