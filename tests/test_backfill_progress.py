"""Progress output of the backfill: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from moesif_users_middleware.backfill.progress import (
    BarProgress,
    LogProgress,
    NullProgress,
    make_progress,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_picks_a_bar_only_on_a_terminal() -> None:
    assert isinstance(make_progress("auto", Terminal()), BarProgress)
    assert isinstance(make_progress("auto", io.StringIO()), LogProgress)
    assert isinstance(make_progress("none", Terminal()), NullProgress)


def test_the_bar_redraws_one_line_with_counts_rate_and_eta() -> None:
    stream = Terminal()
    progress = BarProgress(stream)
    progress.start(total=1000, initial=200)
    progress._started -= 2.0  # pretend two seconds went by: 300 done at 150/s
    progress.update(500, invalid=3)
    line = stream.getvalue()
    assert line.startswith("\r\x1b[K[############------------] ")
    assert "500/1,000 users (50.0%)" in line
    assert "150/s" in line
    assert "ETA 0:00:03" in line
    assert "3 invalid" in line
    assert "\n" not in line
    progress.update(600)  # within 0.1 s of the last redraw: throttled
    assert stream.getvalue() == line
    progress.finish()
    assert stream.getvalue().endswith("\n")
    assert "600/1,000" in stream.getvalue().rsplit("\r", 1)[-1]


def test_log_lines_come_at_the_interval_and_at_the_end() -> None:
    stream = io.StringIO()
    progress = LogProgress(stream, interval=3600)
    progress.start(total=None)
    for done in range(1, 100):
        progress.update(done)
    assert stream.getvalue() == ""
    progress.finish()
    [line] = stream.getvalue().splitlines()
    assert "progress: 99 users, " in line
    assert "%" not in line  # no total known (stdin)


def test_one_user_is_singular() -> None:
    progress = NullProgress()
    progress.start(total=1, initial=0)
    progress.update(1)
    assert progress.describe(progress._started + 1).startswith("1/1 user (100.0%)")
    progress = NullProgress()
    progress.start(total=None, initial=0)
    progress.update(1)
    assert progress.describe(progress._started + 1).startswith("1 user,")
    progress.update(2)
    assert progress.describe(progress._started + 1).startswith("2 users,")
