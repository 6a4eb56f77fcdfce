"""User hooks: resolving them at configuration time, counting and logging their failures.

A hook is any callable taking ``(request, response)``; a dotted path string
(``"pkg.mod.func"`` or ``"pkg.mod:func"``) is imported once, when the configuration is
built. Failures on the request path are counted process-wide and logged at most once
per (hook, kind of failure) per :data:`LOG_INTERVAL` seconds.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import HookError

__all__ = [
    "COUNTER_NAMES",
    "HOOK_PARAMS",
    "LOG_INTERVAL",
    "Hook",
    "HookError",
    "check_signature",
    "count",
    "counters",
    "hook_label",
    "import_path",
    "is_async_hook",
    "report",
    "resolve_hook",
]

Hook = Callable[[Any, Any], Any]
HOOK_PARAMS: tuple[str, ...] = ("request", "response")

logger = logging.getLogger("moesif_users_middleware")

LOG_INTERVAL = 60.0
COUNTER_NAMES: tuple[str, ...] = (
    "captured",  # a user update was handed to the sender
    "skipped",  # the skip hook said so, or failed (skip fails closed)
    "anonymous",  # no user id: nothing recorded
    "hook_errors",  # a hook raised, returned a coroutine on a sync path, or the wrong type
    "invalid",  # a value was dropped or truncated (oversize, not JSON)
    "internal_errors",  # a bug in this library caught so the request goes on
)

_lock = threading.Lock()
_counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
_last_logged: dict[tuple[str, str], float] = {}
_clock = time.monotonic  # replaced in tests


def count(name: str, times: int = 1) -> None:
    """Add ``times`` (one) to a process-wide capture counter."""
    _lock.acquire()  # (cheaper than `with` on the request path)
    try:
        _counters[name] += times
    finally:
        _lock.release()


def counters() -> dict[str, int]:
    """A snapshot of the process-wide counters (see ``capture.capture_stats``)."""
    with _lock:
        return dict(_counters)


def report(counter: str, hook: str, kind: str, detail: str, secret: str = "") -> None:
    """Count a failure and log it unless (hook, kind) was logged in the last minute.

    ``secret`` (the application id) is scrubbed from ``detail`` before logging.
    """
    now = _clock()
    key = (hook, kind)
    with _lock:
        _counters[counter] += 1
        last = _last_logged.get(key)
        if last is not None and now - last < LOG_INTERVAL:
            return
        _last_logged[key] = now
    if secret and secret in detail:
        detail = detail.replace(secret, "<application id>")
    logger.warning(
        "moesif_users_middleware: %s: %s (further %s reports for it are muted for %d s)",
        hook,
        detail,
        kind,
        int(LOG_INTERVAL),
    )


def hook_label(hook: object) -> str:
    """``module.qualname`` of a callable, for messages."""
    module = getattr(hook, "__module__", None)
    name = getattr(hook, "__qualname__", None) or type(hook).__qualname__
    return f"{module}.{name}" if module else str(name)


def is_async_hook(hook: object) -> bool:
    """True for ``async def`` functions and objects whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(hook):
        return True
    call = getattr(hook, "__call__", None)  # noqa: B004 - we want the method itself
    return call is not None and inspect.iscoroutinefunction(call)


def resolve_hook(
    value: object, label: str, params: tuple[str, ...] | None = HOOK_PARAMS, call: str = "hook"
) -> Hook | None:
    """Return the callable for a hook option (callable, dotted path, or ``None``).

    Raises :class:`HookError` with a message starting with ``label`` when the path cannot
    be imported, the value is not callable, or it cannot be called with ``params``
    (``(request, response)``; the message spells the call ``call(request, response)``;
    ``None`` leaves the signature to :func:`check_signature`).
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = import_path(value.strip(), label)
    if not callable(value):
        raise HookError(
            f"{label} must be a callable or a dotted path string, not {type(value).__name__}"
        )
    if params is not None:
        check_signature(value, label, params, call)
    return value


def import_path(path: str, label: str) -> object:
    """Import ``"pkg.mod.attr"`` or ``"pkg.mod:attr"``; :class:`HookError` starts with ``label``."""
    if not path:
        raise HookError(f"{label}: empty dotted path")
    if ":" in path:
        module_name, _, attrs = path.partition(":")
        candidates = [(module_name, attrs)]
    else:
        parts = path.split(".")
        if len(parts) < 2:
            raise HookError(f"{label}: {path!r} is not a dotted path like 'package.module.func'")
        # Longest importable module prefix first: "pkg.mod.Class.method" works too.
        candidates = [
            (".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)
        ]
    error: BaseException | None = None
    for module_name, attrs in candidates:
        try:
            target: object = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only "this prefix is not a module" moves on; a missing import inside it is real.
            if exc.name is not None and (
                module_name == exc.name or module_name.startswith(exc.name + ".")
            ):
                error = error or exc
                continue
            raise HookError(f"{label}: cannot import {path!r}: {exc}") from exc
        except Exception as exc:
            raise HookError(f"{label}: cannot import {path!r}: {exc!r}") from exc
        try:
            for attr in attrs.split("."):
                target = getattr(target, attr)
        except AttributeError as exc:
            raise HookError(f"{label}: cannot import {path!r}: {exc}") from exc
        return target
    raise HookError(f"{label}: cannot import {path!r}: {error}")


def check_signature(
    hook: Callable[..., Any], label: str, params: tuple[str, ...], call: str = "hook"
) -> None:
    """Raise :class:`HookError` unless ``hook`` can be called with ``len(params)`` arguments."""
    try:
        signature = inspect.signature(hook)
    except (TypeError, ValueError):  # builtins and C callables without a signature
        return
    try:
        signature.bind(*(None for _ in params))
    except TypeError:
        raise HookError(
            f"{label}: {hook_label(hook)}{signature} cannot be called as "
            f"{call}({', '.join(params)})"
        ) from None
