"""The werkzeug ``Request`` the WSGI adapter hands to hooks, built on demand.

werkzeug's constructor parses the method, server, root path, path, query string and
remote address up front (about 2 µs a request), while most hooks read a header or the
path and nothing else. :class:`LazyRequest` is a real
:class:`werkzeug.wrappers.Request` whose constructor only keeps the environ: ``headers``
and ``path`` are computed on their own when first read, and reading anything else the
real constructor sets runs that constructor then (what was read or set before is kept).
Only imported when werkzeug is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import EnvironHeaders
from werkzeug.wrappers import Request

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["LazyRequest"]


class _OnDemand:
    """Computes an attribute into the instance's ``__dict__`` on first read.

    A non-data descriptor (like ``functools.cached_property``): once the instance has
    the attribute, this is never consulted again; assigning it works as usual.
    """

    __slots__ = ("compute", "name")

    def __init__(self, compute: Callable[[LazyRequest, str], Any]) -> None:
        self.compute = compute
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: LazyRequest | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return self.compute(instance, self.name)


def _headers(request: LazyRequest, name: str) -> EnvironHeaders:
    headers = request.__dict__[name] = EnvironHeaders(request.environ)
    return headers


def _path(request: LazyRequest, name: str) -> str:
    raw = request.environ.get("PATH_INFO") or ""
    try:  # werkzeug's rule: PATH_INFO holds UTF-8 bytes seen as Latin-1
        path = "/" + raw.encode("latin1").decode("utf-8", "replace").lstrip("/")
    except Exception:  # let werkzeug's constructor raise (or not) as it would
        return _constructed(request, name)  # type: ignore[no-any-return]
    request.__dict__[name] = path
    return path


def _constructed(request: LazyRequest, name: str) -> Any:
    state = request.__dict__
    kept = dict(state)
    Request.__init__(request, kept["environ"], populate_request=False)
    state.update(kept)  # what was read or set before stays as it was
    return state[name]


class LazyRequest(Request):
    """A ``werkzeug.wrappers.Request`` over ``environ`` that parses only what is read."""

    # What Request.__init__ assigns (werkzeug 2.3 to 3.1).
    headers = _OnDemand(_headers)
    path = _OnDemand(_path)
    method = _OnDemand(_constructed)
    scheme = _OnDemand(_constructed)
    server = _OnDemand(_constructed)
    root_path = _OnDemand(_constructed)
    query_string = _OnDemand(_constructed)
    remote_addr = _OnDemand(_constructed)

    def __init__(self, environ: WSGIEnvironment) -> None:  # the real one runs on demand
        self.environ = environ
        self.shallow = False
