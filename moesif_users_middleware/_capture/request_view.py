"""The neutral view of one finished request that adapters build and capture reads.

Building a view costs a few attribute stores: headers, the query string and cookies are
read or parsed only when asked for, and only the header asked for is looked up.
Header values are text: UTF-8 when the raw bytes are valid UTF-8, else Latin-1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

__all__ = ["EnvironView", "RequestView", "ScopeView", "SnapshotSpec", "SnapshotView"]

_NAME_CACHE_SIZE = 256
# CGI/WSGI environ keys for header names ("user-agent" -> "HTTP_USER_AGENT").
_environ_keys: dict[str, str] = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
# ASGI header names as bytes ("User-Agent" -> b"user-agent").
_scope_keys: dict[str, bytes] = {}


class RequestView:
    """Method, path, headers, query, peer and user of one request, plus the native objects.

    Subclasses supply :attr:`method`, :attr:`path`, :attr:`query_string`, :attr:`peer`
    and :meth:`header`. ``request`` and ``response`` are the framework's own objects,
    handed unchanged to the user's hooks.
    """

    __slots__ = ("_auth_user", "_cookies", "_query_params", "request", "response")

    def __init__(
        self, request: Any, response: Any, auth_user: Callable[[], Any] | None = None
    ) -> None:
        self.request = request
        self.response = response
        self._auth_user = auth_user
        self._query_params: dict[str, list[str]] | None = None
        self._cookies: dict[str, str] | None = None

    @property
    def method(self) -> str:
        """The HTTP method, upper-case."""
        return "GET"

    @property
    def path(self) -> str:
        """The request path, without the query string."""
        return ""

    @property
    def query_string(self) -> str:
        """The raw query string, without ``?``; ``""`` when there is none."""
        return ""

    @property
    def peer(self) -> str | None:
        """The address of the socket peer (a proxy, when there is one)."""
        return None

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive; repeats joined), or ``None``."""
        return None

    def auth_user(self) -> Any:
        """The framework's authenticated-user object, or ``None``; read on demand."""
        source = self._auth_user
        return None if source is None else source()

    def user_id_default(self) -> str | None:
        """A user id the server itself established (e.g. WSGI ``REMOTE_USER``), or ``None``."""
        return None

    @property
    def query_params(self) -> dict[str, list[str]]:
        """The query string parsed into lists of values (blank values kept); parsed once."""
        params = self._query_params
        if params is None:
            params = self._query_params = parse_qs(self.query_string, keep_blank_values=True)
        return params

    def query_param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or ``None``."""
        values = self.query_params.get(name)
        return values[0] if values else None

    @property
    def cookies(self) -> dict[str, str]:
        """The ``Cookie`` header as a dict (first value wins); parsed once, never raises."""
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = _parse_cookies(self.header("cookie") or "")
        return cookies

    def snapshot(self, spec: SnapshotSpec) -> tuple[Any, ...]:
        """The peer, the query string and the headers ``spec`` names, for :class:`SnapshotView`."""
        return _Decoded((self.peer, self.query_string, *map(self.header, spec.names)))


class EnvironView(RequestView):
    """A WSGI environ or Django's ``request.META`` (the same CGI key scheme).

    ``user_id_default()`` is ``REMOTE_USER`` (set by the server's own authentication)
    when the adapter supplies no authenticated-user callable.
    """

    __slots__ = ("_environ",)

    def __init__(
        self,
        environ: Mapping[str, Any],
        request: Any,
        response: Any,
        auth_user: Callable[[], Any] | None = None,
    ) -> None:
        # Assigned here rather than through super().__init__: this runs on every request.
        self.request = request
        self.response = response
        self._auth_user = auth_user
        self._query_params = None
        self._cookies = None
        self._environ = environ

    @property
    def environ(self) -> Mapping[str, Any]:
        """The WSGI environ (or Django's ``request.META``) itself."""
        return self._environ

    @property
    def method(self) -> str:
        return _text(self._environ.get("REQUEST_METHOD")) or "GET"

    @property
    def path(self) -> str:
        return _text(self._environ.get("PATH_INFO")) or ""

    @property
    def query_string(self) -> str:
        value = self._environ.get("QUERY_STRING")
        return value if isinstance(value, str) and value else ""

    @property
    def peer(self) -> str | None:
        value = self._environ.get("REMOTE_ADDR")
        return value if isinstance(value, str) and value else None

    def header(self, name: str) -> str | None:
        try:
            key = _environ_keys[name]
        except KeyError:
            key = _environ_key(name)
        value = self._environ.get(key)
        if type(value) is str and value.isascii():
            return value
        return None if type(value) is not str else _redecode(value)

    def snapshot(self, spec: SnapshotSpec) -> tuple[Any, ...]:
        # The raw environ values (one C-level pass); SnapshotView decodes them when read.
        return tuple(map(self._environ.get, spec.environ_keys))

    def user_id_default(self) -> str | None:
        if self._auth_user is not None:
            return None
        value = self._environ.get("REMOTE_USER")
        return value if type(value) is str and value and not value.isspace() else None


class ScopeView(RequestView):
    """An ASGI HTTP scope.

    With no authenticated-user callable, :meth:`auth_user` is ``scope["user"]`` (set by
    Starlette's ``AuthenticationMiddleware``) when present.
    """

    __slots__ = ("_headers", "_scope")

    def __init__(
        self,
        scope: Mapping[str, Any],
        request: Any,
        response: Any,
        auth_user: Callable[[], Any] | None = None,
    ) -> None:
        self.request = request  # (no super().__init__ call, as in EnvironView)
        self.response = response
        self._auth_user = auth_user
        self._query_params = None
        self._cookies = None
        self._scope = scope
        self._headers: dict[bytes, bytes] | None = None

    @property
    def method(self) -> str:
        return _text(self._scope.get("method")) or "GET"

    @property
    def path(self) -> str:
        return _text(self._scope.get("path")) or ""

    @property
    def query_string(self) -> str:
        raw = self._scope.get("query_string")
        if isinstance(raw, (bytes, bytearray)):
            return raw.decode("latin-1")
        return raw if isinstance(raw, str) else ""

    @property
    def peer(self) -> str | None:
        client = self._scope.get("client")
        if not client or not isinstance(client, (tuple, list)):
            return None
        host = client[0]
        return host if type(host) is str and host else None

    def header(self, name: str) -> str | None:
        headers = self._headers
        if headers is None:
            headers = self._headers = _index_headers(self._scope.get("headers"))
        key = _scope_keys.get(name)
        if key is None:
            key = _scope_key(name)
        return _scope_text(headers.get(key))

    def snapshot(self, spec: SnapshotSpec) -> tuple[Any, ...]:
        # The raw header bytes; SnapshotView decodes them when read. This runs on every
        # request: one pass over the header list picks the wanted values (3x cheaper
        # than indexing every header first); anything unusual takes the general path.
        scope = self._scope
        raw = scope.get("headers")
        positions = spec.scope_positions
        if self._headers is None and type(raw) is list and positions is not None:
            values = [self.peer, scope.get("query_string"), *spec.scope_blank]
            find = positions.get
            try:
                for name, value in raw:
                    position = find(name)
                    if position is None:
                        if name.islower():
                            continue  # a header no default reads
                    elif values[position] is None and type(value) is bytes:
                        values[position] = value
                        continue
                    break  # an upper-case name, a repeat or a non-bytes value
                else:
                    return _ScopeRaw(values)
            except (TypeError, ValueError, AttributeError):
                pass  # a malformed entry: the general path skips it
        headers = self._headers
        if headers is None:
            headers = self._headers = _index_headers(raw)
        return _ScopeRaw((self.peer, scope.get("query_string"), *map(headers.get, spec.scope_keys)))

    def auth_user(self) -> Any:
        source = self._auth_user
        if source is not None:
            return source()
        return self._scope.get("user")


class SnapshotSpec:
    """Which headers a :meth:`RequestView.snapshot` keeps (names lower-case)."""

    __slots__ = ("environ_keys", "index", "names", "scope_blank", "scope_keys", "scope_positions")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = tuple(dict.fromkeys(name.lower() for name in names))
        self.environ_keys = ("REMOTE_ADDR", "QUERY_STRING", *map(_environ_key, self.names))
        self.scope_keys = tuple(map(_scope_key, self.names))
        self.index = {name: position for position, name in enumerate(self.names, 2)}
        # For ScopeView.snapshot's one pass (None: two names share a key, use the index).
        positions = {key: position for position, key in enumerate(self.scope_keys, 2)}
        self.scope_positions = positions if len(positions) == len(self.scope_keys) else None
        self.scope_blank = (None,) * len(self.scope_keys)


# A snapshot's type says how its values are encoded: a plain tuple holds raw environ
# values (text as Latin-1), _ScopeRaw raw ASGI header bytes, _Decoded text.
class _ScopeRaw(tuple):  # type: ignore[type-arg]
    __slots__ = ()


class _Decoded(tuple):  # type: ignore[type-arg]
    __slots__ = ()


class SnapshotView(RequestView):
    """A request seen through a snapshot taken when it finished (no native objects).

    What the capture reads after the request (the default token, client IP, user agent
    and campaign) comes from here, so nothing of the request but a few strings is kept.
    """

    __slots__ = ("_decode", "_index", "_values")

    def __init__(self, spec: SnapshotSpec, values: tuple[Any, ...]) -> None:
        self.request = None
        self.response = None
        self._auth_user = None
        self._query_params = None
        self._cookies = None
        self._index = spec.index
        self._values = values
        kind = type(values)
        self._decode = (
            _environ_text if kind is tuple else _scope_text if kind is _ScopeRaw else _as_text
        )

    @property
    def query_string(self) -> str:
        value = self._values[1]
        if isinstance(value, (bytes, bytearray)):
            return value.decode("latin-1")
        return value if isinstance(value, str) else ""

    @property
    def peer(self) -> str | None:
        value = self._values[0]
        return value if isinstance(value, str) and value else None

    def header(self, name: str) -> str | None:
        position = self._index.get(name)
        if position is None:
            return None
        return self._decode(self._values[position])


def _as_text(value: object) -> str | None:
    return value if type(value) is str else None


def _scope_text(raw: object) -> str | None:
    """An ASGI header value as text: UTF-8 when valid, else Latin-1; ``None`` if not bytes."""
    if type(raw) is not bytes:
        if not isinstance(raw, bytearray):
            return None  # absent, or a non-bytes value from a malformed scope
        raw = bytes(raw)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _environ_text(value: object) -> str | None:
    if type(value) is str and value.isascii():
        return value
    return None if type(value) is not str else _redecode(value)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _redecode(value: str) -> str:
    """A WSGI "bytes as Latin-1" string, decoded as UTF-8 when it is valid UTF-8."""
    try:
        return value.encode("latin-1").decode()
    except UnicodeError:
        return value


def _environ_key(name: str) -> str:
    lowered = name.lower()
    key = _environ_keys.get(lowered)
    if key is None:
        key = "HTTP_" + lowered.upper().replace("-", "_")
    if len(_environ_keys) < _NAME_CACHE_SIZE:
        _environ_keys[name] = key
    return key


def _scope_key(name: str) -> bytes:
    key = name.lower().encode("latin-1", "replace")
    if len(_scope_keys) < _NAME_CACHE_SIZE:
        _scope_keys[name] = key
    return key


def _index_headers(raw: object) -> dict[bytes, bytes]:
    """Header name (lower-case) -> value; repeats joined with ", " ("; " for cookies).

    Malformed entries are skipped: a scope from a buggy server never raises here.
    """
    if type(raw) is list or type(raw) is tuple:
        # Fast path: what servers send (lower-case names, no repeats) is one C-level dict().
        try:
            index: dict[bytes, bytes] = dict(raw)
            if len(index) == len(raw) and b"".join(index).islower():
                return index
        except (TypeError, ValueError):
            pass
    index = {}
    try:
        items = iter(raw)  # type: ignore[call-overload]
    except TypeError:
        return index
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        if not isinstance(name, (bytes, bytearray)) or not isinstance(value, (bytes, bytearray)):
            continue
        name = bytes(name).lower()
        previous = index.get(name)
        if previous is None:
            index[name] = bytes(value)
        else:
            index[name] = previous + (b"; " if name == b"cookie" else b", ") + value
    return index


def _parse_cookies(header: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        name = name.strip()
        if sep and name and name not in cookies:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies[name] = value
    return cookies
