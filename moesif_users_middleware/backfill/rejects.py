"""The rejects file: one JSON line per record that was not delivered, with the reason.

Each line is ``{"line": N, "field": "metadata.age" | null, "message": "...",
"record": <the raw record>}`` (``"pk"`` instead of ``"line"`` for the Django source).
The file is created on the first reject; a fresh run replaces an old one, a resumed run
cuts it back to the size recorded in the checkpoint and appends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

__all__ = ["RejectsFile"]


class RejectsFile:
    """Appends reject lines; ``offset()`` is the size to record in a checkpoint."""

    def __init__(
        self, path: Path, *, key_name: str = "line", resume_offset: int | None = None
    ) -> None:
        self.path = path
        self.key_name = key_name
        self.count = 0
        self._file: IO[bytes] | None = None
        self._written = 0
        if resume_offset is None:
            path.unlink(missing_ok=True)  # a fresh run: the old rejects describe another run
        else:
            self._truncate(resume_offset)
        self.kept = self._written  # bytes of earlier runs' rejects kept (0: none)

    def _truncate(self, offset: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size > offset:
            os.truncate(self.path, offset)
        self._written = min(size, offset)

    def write(self, key: Any, field: str | None, message: str, record: Any) -> None:
        """Add one rejected record."""
        if self._file is None:
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open until close()
        entry = {self.key_name: key, "field": field, "message": message, "record": record}
        try:
            data = (json.dumps(entry, ensure_ascii=False, default=repr) + "\n").encode()
        except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
            data = (json.dumps(entry, default=repr) + "\n").encode()
        self._file.write(data)
        self._written += len(data)
        self.count += 1

    def offset(self) -> int:
        """Bytes written so far (flushed first, so a checkpoint may record it)."""
        if self._file is not None:
            self._file.flush()
        return self._written

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
