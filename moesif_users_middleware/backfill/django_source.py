"""Django source for the backfill: every user of the user model, in primary-key order.

``python manage.py moesif_users_backfill`` runs :func:`run_command`. Users are read with
``.iterator(chunk_size=...)`` (never the whole table in memory), each one becomes a
profile, and the profiles go through the same pipeline as ``moesif-users send`` (same
options, progress, checkpoint, rejects file and dry run). The checkpoint keeps the last
settled primary key, so a resumed run continues with ``pk > last`` even if users were
added or deleted in between.

How a profile is built (there is no request during a backfill):

1. ``MOESIF_USERS["GET_USER_PROFILE"]``, if set, is called as ``get_user_profile(user)``
   and returns the whole profile: a dict or ``User`` (``user_id`` required), or ``None``
   to leave that user out. Nothing else is consulted.
2. Otherwise each configured request hook (``IDENTIFY_USER``, ``IDENTIFY_COMPANY``,
   ``GET_SESSION_TOKEN``, ``GET_METADATA``, ``GET_CAMPAIGN``) that *declares a ``user``
   parameter* -- e.g. ``def get_metadata(request, response, user=None)`` -- is called as
   ``hook(None, None, user=user)``, so the same function serves live requests
   (``user`` unset, read ``request.user``) and the backfill. Hooks without that
   parameter cannot run without a request and are left out (with a warning), except
   ``IDENTIFY_USER``: a backfill that made up different user ids from the middleware's
   would create duplicate profiles, so it refuses to start instead.
3. Defaults, as in the middleware: the user id is ``user.pk``. Without a usable
   ``GET_METADATA`` the metadata holds Moesif's reserved ``email``, ``first_name`` and
   ``last_name`` from the user model when they are set.

A hook that raises rejects that user (the rejects file names the hook) and the run goes
on. Django is imported only by this module.

Where the checkpoint lives (:func:`default_state_paths`): it describes one database, so
it sits beside it, never in whatever directory the command happens to run from. For a
SQLite database file: ``<db file>.moesif_users_backfill.checkpoint`` in the database's
directory. For any other database (or an in-memory SQLite one): a file named after the
database in a per-user state directory (``$XDG_STATE_HOME``, else
``~/.local/state``; ``%LOCALAPPDATA%`` on Windows, under ``moesif_users_middleware``).
The rejects file goes beside the checkpoint (the checkpoint records its size). The
command prints both paths; ``--checkpoint`` and ``--rejects`` choose others.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.db.models import QuerySet
from django.utils.module_loading import import_string

from .._capture.pipeline import user_id_from_object
from ..models import User
from .arguments import add_sending_arguments
from .command import Output, execute
from .items import Item, Skipped, Unparsed

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DjangoUserSource",
    "ProfileBuilder",
    "add_arguments",
    "default_state_paths",
    "run_command",
]

DEFAULT_CHUNK_SIZE = 2000
PROG = "manage.py moesif_users_backfill"
_REQUEST_HOOKS = (
    ("IDENTIFY_USER", "user_id"),
    ("IDENTIFY_COMPANY", "company_id"),
    ("GET_SESSION_TOKEN", "session_token"),
    ("GET_METADATA", "metadata"),
    ("GET_CAMPAIGN", "campaign"),
)
_DEFAULT_METADATA = ("email", "first_name", "last_name")
_STEM = "moesif_users_backfill"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class BackfillConfigurationError(ValueError):
    """The hooks cannot build profiles consistent with the middleware's."""


@dataclass(frozen=True)
class ProfileBuilder:
    """Turns a user object into a profile dict (``None``: leave the user out)."""

    get_user_profile: Callable[[Any], Any] | None = None
    hooks: tuple[tuple[str, str, Callable[..., Any]], ...] = ()  # (setting, field, hook)
    default_metadata: bool = True

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any], warn: Callable[[str], None]) -> ProfileBuilder:
        """Build from ``settings.MOESIF_USERS`` (upper-case keys, callables or dotted paths)."""
        profile_hook = raw.get("GET_USER_PROFILE")
        if profile_hook is not None:
            return cls(get_user_profile=_resolve(profile_hook, "GET_USER_PROFILE"))
        hooks: list[tuple[str, str, Callable[..., Any]]] = []
        default_metadata = True
        for setting, field in _REQUEST_HOOKS:
            value = raw.get(setting)
            if value is None:
                continue
            hook = _resolve(value, setting)
            if field == "metadata":
                default_metadata = False
            if _declares_user(hook):
                hooks.append((setting, field, hook))
            elif setting == "IDENTIFY_USER":
                raise BackfillConfigurationError(
                    "MOESIF_USERS['IDENTIFY_USER'] takes no `user` parameter, so the backfill "
                    "cannot tell which user id the middleware would record. Give it one "
                    "(def identify_user(request, response, user=None): ...) or set "
                    "MOESIF_USERS['GET_USER_PROFILE'] = 'app.module.profile_of_user'"
                )
            else:
                warn(
                    f"MOESIF_USERS['{setting}'] takes no `user` parameter: the backfill "
                    f"sends no {field} from it (add `user=None` to its parameters, or set "
                    "GET_USER_PROFILE)"
                )
        return cls(hooks=tuple(hooks), default_metadata=default_metadata)

    def build(self, user: Any) -> Any:
        """The profile of ``user`` (dict, ``User``, ``Skipped`` or ``Unparsed``)."""
        if self.get_user_profile is not None:
            try:
                profile = self.get_user_profile(user)
            except Exception as exc:
                return _hook_failed("GET_USER_PROFILE", exc)
            if profile is None:
                return Skipped
            return profile.to_dict() if isinstance(profile, User) else profile
        record: dict[str, Any] = {}
        for setting, field, hook in self.hooks:
            try:
                value = hook(None, None, user=user)
            except Exception as exc:
                return _hook_failed(setting, exc)
            if value is not None:
                record[field] = value
        if "user_id" not in record:
            user_id = user_id_from_object(user)
            if user_id is None:
                return Skipped
            record["user_id"] = user_id
        if self.default_metadata:
            metadata = {
                name: value
                for name in _DEFAULT_METADATA
                if isinstance(value := getattr(user, name, None), str) and value
            }
            if metadata:
                record["metadata"] = metadata
        # Keep the dict order of the wire form: user_id first.
        return {"user_id": record.pop("user_id"), **record}


class DjangoUserSource:
    """Users of ``queryset`` (default: every user) as backfill items keyed by ``pk``."""

    def __init__(
        self,
        builder: ProfileBuilder,
        queryset: QuerySet[Any] | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        model = get_user_model()
        self.queryset: QuerySet[Any] = (
            queryset if queryset is not None else model._default_manager.all()
        )
        self.builder = builder
        self.chunk_size = chunk_size
        self.name = f"django:{self.queryset.model._meta.label}"
        self._total: int | None = None

    def records(self, skip: int, cursor: Any) -> Iterator[Item]:
        """Users in pk order after ``cursor`` (a pk), else after the first ``skip``."""
        users = self.queryset.order_by("pk")
        if cursor is not None:
            users = users.filter(pk__gt=cursor)
            self._total = skip + users.count()
        elif skip:
            users = users[skip:]
        build = self.builder.build
        for user in users.iterator(chunk_size=self.chunk_size):
            pk = _json_key(user.pk)
            profile = build(user)
            if type(profile) is Unparsed:
                yield pk, profile, {"pk": pk, "user": str(user)}
            else:
                yield pk, profile, profile

    def estimated_total(self, done: int) -> int | None:
        """The number of users (counted once)."""
        if self._total is None:
            self._total = self.queryset.count()
        return max(self._total, done)

    def raw_record(self, raw: Any) -> Any:
        """Rejects show the profile as built (or the user's pk and ``str``)."""
        return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments: those of ``moesif-users send`` plus ``--chunk-size``."""
    parser.description = (
        "Send every user of the user model to POST /v1/users/batch, in primary-key "
        "order, with profiles built by the MOESIF_USERS hooks. The checkpoint and the "
        "rejects file are kept beside a SQLite database file, else in a per-user state "
        "directory; the command prints where (--checkpoint and --rejects choose others)."
    )
    add_sending_arguments(parser)
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"users fetched per database round trip (default {DEFAULT_CHUNK_SIZE})",
    )


def run_command(
    options: Mapping[str, Any],
    *,
    stdout: Output | None = None,
    stderr: TextIO | None = None,
    queryset: QuerySet[Any] | None = None,
) -> int:
    """Run the backfill with the command's parsed ``options``; returns the exit status."""
    err = stderr if stderr is not None else sys.stderr
    raw = getattr(settings, "MOESIF_USERS", None) or {}
    if not isinstance(raw, Mapping):
        err.write(f"{PROG}: error: settings.MOESIF_USERS must be a dict\n")
        return 2
    args = argparse.Namespace(**options)
    if args.application_id is None and raw.get("APPLICATION_ID") is not None:
        args.application_id = raw["APPLICATION_ID"]
    if args.base_url is None and raw.get("BASE_URL") is not None:
        args.base_url = raw["BASE_URL"]
    if args.chunk_size < 1:
        err.write(f"{PROG}: error: --chunk-size must be at least 1\n")
        return 2
    try:
        builder = ProfileBuilder.from_settings(raw, lambda text: _warn(err, text))
    except (BackfillConfigurationError, ImportError, TypeError) as exc:
        err.write(f"{PROG}: error: {exc}\n")
        return 2
    source = DjangoUserSource(builder, queryset, chunk_size=args.chunk_size)
    checkpoint, rejects = default_state_paths(source.queryset)
    if args.checkpoint is None and not (args.dry_run or args.no_checkpoint):
        err.write(f"{PROG}: checkpoint: {checkpoint}\n")
    if args.rejects is None:
        err.write(f"{PROG}: rejects file: {_rejects_path(rejects, args.dry_run)}\n")
    if (args.checkpoint is None or args.rejects is None) and not checkpoint.parent.is_dir():
        try:
            checkpoint.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            err.write(
                f"{PROG}: error: cannot create {checkpoint.parent}: {exc.strerror or exc}; "
                "pass --checkpoint and --rejects\n"
            )
            return 2
    return execute(
        source,
        args,
        source_id=source.name,
        default_checkpoint=str(checkpoint),
        default_rejects=str(rejects),
        key_name="pk",
        stdout=stdout,
        stderr=err,
        prog=PROG,
    )


def default_state_paths(queryset: QuerySet[Any]) -> tuple[Path, Path]:
    """The default (checkpoint, rejects file) for backfilling ``queryset``'s database.

    Beside a SQLite database file; otherwise in a per-user state directory, named after
    the database (engine, name and a hash of its connection settings and user model).
    """
    connection = connections[queryset.db]
    config = connection.settings_dict
    name = config.get("NAME")
    in_memory = not isinstance(name, Path) and (name == ":memory:" or "mode=memory" in str(name))
    if connection.vendor == "sqlite" and name and not in_memory:
        text = os.fspath(name)
        if text.startswith("file:"):  # a URI name (OPTIONS "uri": True)
            text = text[5:].split("?", 1)[0].removeprefix("//localhost").removeprefix("//")
        database = Path(text).resolve()
        stem = f"{database.name}.{_STEM}"
        directory = database.parent
    else:
        identity = [
            connection.vendor,
            str(config.get("HOST") or ""),
            str(config.get("PORT") or ""),
            str(name or ""),
            queryset.model._meta.label,
        ]
        digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:12]
        label = _UNSAFE_NAME.sub("_", f"{connection.vendor}.{name or queryset.db}")[:60]
        stem = f"{_STEM}.{label}.{digest}"
        directory = _state_directory()
    return directory / f"{stem}.checkpoint", directory / f"{stem}.rejects.jsonl"


def _state_directory() -> Path:
    """Where per-user state lives: ``$XDG_STATE_HOME`` or ``~/.local/state`` (Windows:
    ``%LOCALAPPDATA%``), under ``moesif_users_middleware``."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_STATE_HOME", "")
        if not os.path.isabs(base):  # the XDG spec: relative values are ignored
            base = str(Path.home() / ".local" / "state")
    return Path(base) / "moesif_users_middleware"


def _rejects_path(default: Path, dry_run: bool) -> Path:
    """The rejects file :func:`execute` will use by default (dry runs have their own)."""
    return (
        default.with_name(default.name.replace(".rejects.", ".dry-run.rejects."))
        if dry_run
        else default
    )


def _warn(stream: TextIO, text: str) -> None:
    stream.write(f"{PROG}: warning: {text}\n")


def _declares_user(hook: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(hook).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get("user")
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _resolve(value: Any, setting: str) -> Callable[..., Any]:
    if isinstance(value, str):
        path = value.strip()
        try:
            if ":" in path:
                module_name, _, attrs = path.partition(":")
                target: Any = importlib.import_module(module_name)
                for attr in attrs.split("."):
                    target = getattr(target, attr)
            else:
                target = import_string(path)
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"MOESIF_USERS['{setting}']: cannot import {path!r}: {exc}") from None
        value = target
    if not callable(value):
        raise TypeError(f"MOESIF_USERS['{setting}'] must be a callable or a dotted path")
    return value  # type: ignore[no-any-return]


def _hook_failed(setting: str, exc: Exception) -> Unparsed:
    return Unparsed(f"the hook raised {type(exc).__name__}: {exc}", setting)


def _json_key(pk: Any) -> Any:
    return pk if isinstance(pk, (int, str)) else str(pk)
