"""The outcome of one ``moesif-users send`` run: its counts and its exit status."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Summary"]


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
