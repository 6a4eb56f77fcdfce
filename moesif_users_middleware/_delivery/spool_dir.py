"""A spool directory's files: their names, private creation, and who may touch each one.

A spool directory holds one SQLite database (WAL mode, :mod:`.spool_db`) per process that
writes to it: ``moesif-spool-<app>-<pid>-<token>.db`` with SQLite's ``-wal`` and ``-shm``
beside it, and ``moesif-spool-<app>-<pid>-<token>.lock``, on which the owner holds a
POSIX lock for as long as it lives. ``<app>`` is a hash of the application id (the id
itself is never written anywhere), so senders of different applications sharing a
directory never touch each other's records; ``<token>`` makes the name unique even when a
pid is reused (a restarted container).

A lock that can be taken means the owner is gone (the kernel drops a dead process's
POSIX locks, ``kill -9`` included): whoever takes it may adopt the file. POSIX locks are
per process, so a forked child never inherits its parent's (it cannot take it either),
and closing *any* descriptor of a lock file drops this process's lock on it: this module
keeps a registry of the files this process holds (:func:`claim`) and the spool never
opens those.

Every file is created ``0600`` (SQLite gives its ``-wal`` and ``-shm`` the database's
mode) in a directory that must belong to this process's user and must not be writable
by group or others: the records hold session tokens and personal data, and a file
planted by another user would be adopted and sent under this application's id.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SpoolError",
    "SpoolName",
    "app_tag",
    "check_directory",
    "claim",
    "create_private",
    "list_names",
    "lock_new",
    "move_aside",
    "release_claim",
    "remove_files",
    "try_lock",
]

PREFIX = "moesif-spool-"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class SpoolError(Exception):
    """The spool directory or a spool file cannot be used (the message says why)."""


def app_tag(application_id: str) -> str:
    """The application's part of a file name: a hash, never the id."""
    digest = hashlib.sha256(b"moesif-users-spool\0" + application_id.encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class SpoolName:
    """One spool file's name, parsed."""

    directory: str
    tag: str
    pid: int
    token: str

    @classmethod
    def new(cls, directory: str, tag: str) -> SpoolName:
        """A fresh name for this process."""
        return cls(directory, tag, os.getpid(), secrets.token_hex(4))

    @classmethod
    def parse(cls, directory: str, filename: str) -> SpoolName | None:
        """The name of ``moesif-spool-<tag>-<pid>-<token>.db``, else ``None``."""
        if not (filename.startswith(PREFIX) and filename.endswith(".db")):
            return None
        parts = filename[len(PREFIX) : -3].split("-")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(directory, parts[0], int(parts[1]), parts[2])

    @property
    def stem(self) -> str:
        return f"{PREFIX}{self.tag}-{self.pid}-{self.token}"

    @property
    def db(self) -> str:
        return os.path.join(self.directory, self.stem + ".db")

    @property
    def lock(self) -> str:
        return os.path.join(self.directory, self.stem + ".lock")

    def sqlite_files(self) -> list[str]:
        """The database and the files SQLite keeps beside it."""
        return [self.db, self.db + "-wal", self.db + "-shm"]


def list_names(directory: str, tag: str | None = None) -> list[SpoolName]:
    """The spool files in ``directory`` (of one application when ``tag`` is given)."""
    try:
        filenames = sorted(os.listdir(directory))
    except OSError:
        return []
    names = (SpoolName.parse(directory, filename) for filename in filenames)
    return [name for name in names if name is not None and (tag is None or name.tag == tag)]


def check_directory(directory: str) -> None:
    """Create ``directory`` (``0700``) if missing; ``SpoolError`` unless this user owns it
    and no one else may write to it."""
    if fcntl is None:  # pragma: no cover - not on Windows
        raise SpoolError("the spool needs POSIX file locks (fcntl), which this system lacks")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.stat(directory)
    except OSError as exc:
        raise SpoolError(f"cannot create or read the directory ({exc.strerror})") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise SpoolError("it is not a directory")
    if info.st_uid != os.geteuid():
        raise SpoolError(
            f"it belongs to another user (uid {info.st_uid}); the spool holds personal "
            "data: use a directory this process's user owns"
        )
    if info.st_mode & 0o022:
        raise SpoolError(
            f"group or others may write to it (mode {stat.S_IMODE(info.st_mode):o}); "
            "the spool holds personal data: chmod 700 it"
        )


def create_private(path: str) -> None:
    """Create an empty file only this user may read or write (``FileExistsError`` if any)."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o600))


def lock_new(path: str) -> int:
    """Create the lock file ``path`` and hold its lock; the descriptor."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | _NOFOLLOW, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def try_lock(path: str) -> int | None:
    """Take the lock of an existing lock file: its descriptor, or ``None`` when its owner
    lives (or another process holds it, or it is gone, or it is not ours)."""
    try:
        fd = os.open(path, os.O_RDWR | _NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(fd)
            return None
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Still the file at that path? An adopter may have removed it meanwhile.
        if os.stat(path).st_ino != info.st_ino:
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    return fd


def move_aside(name: SpoolName) -> str:
    """Rename a file that cannot be read out of the spool's way; the database's new path."""
    suffix = time.strftime(".corrupt-%Y%m%dT%H%M%S")
    for path in name.sqlite_files():
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.replace(".db", ".db" + suffix, 1))
    _unlink(name.lock)
    return name.db.replace(".db", ".db" + suffix, 1)


def remove_files(name: SpoolName) -> None:
    """Delete a spool file (the database and SQLite's files first, the lock last)."""
    for path in name.sqlite_files():
        _unlink(path)
    _unlink(name.lock)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# -- the files this process holds (its own, and those it is adopting) -------------------------

_claims: dict[str, int] = {}  # file stem -> pid of the process that claimed it
_claims_lock = threading.Lock()
_claims_pid = os.getpid()


def claim(stem: str) -> bool:
    """Claim a file for this process; ``False`` if this process holds it already.

    A process must never open the lock file of a file it holds: closing that descriptor
    would drop its own POSIX lock. A forked child starts with no claims.
    """
    global _claims_lock, _claims_pid
    pid = os.getpid()
    if _claims_pid != pid:  # forked: the parent's claims are not ours
        _claims_lock = threading.Lock()
        _claims_pid = pid
        _claims.clear()
    with _claims_lock:
        if _claims.get(stem) == pid:
            return False
        _claims[stem] = pid
        return True


def release_claim(stem: str) -> None:
    """The file is no longer this process's (closed, adopted, or left to its owner)."""
    with _claims_lock:
        _claims.pop(stem, None)
