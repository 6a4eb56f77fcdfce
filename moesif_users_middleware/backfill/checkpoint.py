"""The checkpoint file: how far a backfill got, so an interrupted run continues there.

A small JSON object, rewritten atomically (temporary file + ``os.replace``) after every
batch the API confirmed. ``position`` counts input records in order -- valid or not --
whose fate is settled: delivered (2xx) or written to the rejects file. A resumed run
skips exactly that many records, so nothing confirmed is sent again; ``cursor`` is the
key of the last settled record (the Django source resumes after that primary key);
``rejects_offset`` is the rejects file's size at that point, so rejects of records that
will be read again are cut off rather than written twice. ``invalid`` and ``failed`` add
up over resumed runs: a resumed run exits 1 if any run rejected a record. ``kind`` is
what the run sends (``users`` or ``companies``): a checkpoint resumes only a run of its
kind (checkpoints written before companies existed have none, and are of users).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint"]

VERSION = 1


class CheckpointError(ValueError):
    """The checkpoint file exists but cannot be used."""


@dataclass
class Checkpoint:
    """What a run has settled so far (counts are cumulative over resumed runs)."""

    source: str  # the input path (absolute) or a description such as "django:auth.User"
    kind: str = "users"  # --kind: "users" or "companies"
    position: int = 0
    cursor: Any = None
    rejects_offset: int = 0
    sent: int = 0
    invalid: int = 0
    failed: int = 0
    complete: bool = False
    source_size: int | None = None  # to warn when the input changed under a resumed run
    source_mtime_ns: int | None = None
    version: int = field(default=VERSION)


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``, ``None`` if there is none; ``CheckpointError`` if unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError("not a checkpoint of this version")
        checkpoint = Checkpoint(**data)
        if not isinstance(checkpoint.position, int) or checkpoint.position < 0:
            raise ValueError("bad position")
        if type(checkpoint.kind) is not str:
            raise ValueError("bad kind")
        for name in ("rejects_offset", "sent", "invalid", "failed"):
            count = getattr(checkpoint, name)
            if type(count) is not int or count < 0:  # the exit status rests on these counts
                raise ValueError(f"bad {name}")
    except (ValueError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is not usable ({exc}); remove it or pass --restart"
        ) from None
    return checkpoint


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically: readers see the old or the new file, never a mix.

    No fsync: after a crash of the machine the file may be one batch behind, which only
    means a few records are sent twice -- harmless, the Users API merges updates.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(asdict(checkpoint), separators=(",", ":"), default=str)
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(data)
    os.replace(temporary, path)
