"""WSGI plumbing shared by the Flask and WSGI adapters (no framework imports).

- :class:`ResponseView`: status and headers as the app passed them to ``start_response``.
- :func:`call_on_close`: run a callback when the server closes a response iterable,
  without buffering, copying or re-chunking the body, and keeping ``wsgi.file_wrapper``
  objects as they are so servers can still use ``sendfile``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse

__all__ = ["ResponseView", "call_on_close", "once"]


class ResponseView:
    """The response as WSGI hooks see it.

    ``status`` is the status line (``"200 OK"``), ``status_code`` its number and
    ``headers`` the list of ``(name, value)`` pairs passed to ``start_response``.
    Both are ``None`` until the app has started its response.

    Calling the view is ``start_response``: it records status and headers, then
    forwards the call unchanged to the server's ``start_response``.
    """

    __slots__ = ("_start_response", "headers", "status")

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
        self.status: str | None = None
        self.headers: list[tuple[str, str]] | None = None

    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: OptExcInfo | None = None,
    ) -> Callable[[bytes], object]:
        self.status = status
        self.headers = headers
        if exc_info is None:
            return self._start_response(status, headers)
        return self._start_response(status, headers, exc_info)

    @property
    def status_code(self) -> int | None:
        """The numeric status (``200``), or ``None`` before the response started."""
        status = self.status
        if status is None:
            return None
        try:
            return int(status[:3])
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        """The first response header called ``name`` (case-insensitive), or ``None``."""
        lowered = name.lower()
        for key, value in self.headers or ():
            if key.lower() == lowered:
                return value
        return None

    def __repr__(self) -> str:
        return f"ResponseView(status={self.status!r})"


def call_on_close(
    iterable: Iterable[Any], callback: Callable[[], None], file_wrapper: object = None
) -> Iterable[Any]:
    """Return ``iterable`` arranged so that ``callback()`` runs after the server closes it.

    ``file_wrapper`` is ``environ.get("wsgi.file_wrapper")``: an instance of it is
    returned itself (its ``close`` chained) so the server still recognises it. Anything
    else is wrapped in a thin object whose ``__iter__`` hands out the original iterator:
    chunks flow from the app to the server untouched and as lazily as before.

    The original ``close()`` runs first; if it raises, the error propagates and
    ``callback`` is not run. ``callback`` must not raise.
    """
    if isinstance(file_wrapper, type) and isinstance(iterable, file_wrapper):
        chained = _chain_close(iterable, callback)
        if chained:
            return iterable
    if isinstance(iterable, (list, tuple)):
        return _ClosingSequence(iterable, callback)
    return _ClosingIterable(iterable, callback)


def once(callback: Callable[[], None]) -> Callable[[], None]:
    """``callback`` made safe to call twice: only the first call runs it."""
    done = False

    def run_once() -> None:
        nonlocal done
        if not done:
            done = True
            callback()

    return run_once


class _ClosingIterable:
    """Iterates as the wrapped iterable does; ``close()`` closes it, then runs the callback."""

    __slots__ = ("_callback", "_iterable")

    def __init__(self, iterable: Iterable[Any], callback: Callable[[], None]) -> None:
        self._iterable = iterable
        self._callback: Callable[[], None] | None = callback

    def __iter__(self) -> Iterator[Any]:
        return iter(self._iterable)

    def close(self) -> None:
        callback = self._callback
        if callback is None:  # a second close() (some servers, test clients) does nothing
            return
        self._callback = None
        close = getattr(self._iterable, "close", None)
        if close is not None:
            close()
        callback()


class _ClosingSequence(_ClosingIterable):
    """A list/tuple body keeps ``len()``, which servers use to set ``Content-Length``."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]


def _chain_close(wrapper: Any, callback: Callable[[], None]) -> bool:
    """Make ``wrapper.close()`` also run ``callback``; False when the object refuses."""
    original = getattr(wrapper, "close", None)

    def close() -> None:
        if original is not None:
            original()
        callback()

    try:
        wrapper.close = once(close)
    except (AttributeError, TypeError):
        return False
    return True
