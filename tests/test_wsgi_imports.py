"""The Flask and WSGI adapters import no other web framework (checked in fresh interpreters)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest
from conftest import CollectorHandle

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = """
import importlib.abc
import sys

BLOCKED = {blocked!r}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in this test")
        return None


sys.meta_path.insert(0, Blocker())
"""


def run_blocked(blocked: list[str], body: str) -> dict[str, object]:
    """Run ``body`` in a fresh interpreter with ``blocked`` top-level packages unimportable."""
    script = BLOCKER.format(blocked=blocked) + textwrap.dedent(body)
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(find_spec("flask") is None, reason="flask is not installed")
def test_flask_and_wsgi_adapters_import_no_other_framework() -> None:
    result = run_blocked(
        ["django", "starlette", "fastapi"],
        """
        import json, sys
        import moesif_users_middleware.flask
        import moesif_users_middleware.wsgi
        print(json.dumps({"loaded": sorted(
            name for name in ("django", "starlette", "fastapi", "flask", "werkzeug")
            if name in sys.modules
        )}))
        """,
    )
    assert result["loaded"] == ["flask", "werkzeug"]


def test_wsgi_adapter_imports_no_framework_at_all() -> None:
    result = run_blocked(
        ["django", "starlette", "fastapi", "flask"],
        """
        import json, sys
        import moesif_users_middleware.wsgi
        print(json.dumps({"loaded": sorted(
            name for name in ("django", "starlette", "fastapi", "flask", "werkzeug")
            if name in sys.modules
        )}))
        """,
    )
    assert result["loaded"] == []


WSGI_HOOKS_SCRIPT = """
import json, sys
from wsgiref.util import setup_testing_defaults
from moesif_users_middleware.sender import get_sender
from moesif_users_middleware.wsgi import MoesifUsersMiddleware

seen = []

def identify_user(request, response):
    seen.append(request)
    return request.get("HTTP_X_USER")

def get_metadata(request, response):
    return {"kind": type(request).__name__, "status": response.status_code,
            "path": request["PATH_INFO"], "header": response.header("x-custom")}

def app(environ, start_response):
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Custom", "kept")])
    return [b"ok"]

options = {"application_id": APP_ID, "base_url": URL, "flush_interval": 0.2}
wrapped = MoesifUsersMiddleware(app, identify_user=identify_user, get_metadata=get_metadata,
                                **options)
environ = {"PATH_INFO": "/orders", "HTTP_X_USER": USER}
setup_testing_defaults(environ)
body = wrapped(environ, lambda status, headers, exc_info=None: None)
chunks = list(body)
body.close()
assert get_sender(application_id=APP_ID, base_url=URL).flush(5)
print(json.dumps({"same_environ": len(seen) == 1 and seen[0] is environ,
                  "chunks": [c.decode() for c in chunks],
                  "werkzeug": "werkzeug" in sys.modules}))
"""


@pytest.mark.parametrize("blocked", [True, False], ids=["without werkzeug", "with werkzeug"])
def test_wsgi_hooks_get_the_environ_whether_werkzeug_is_installed_or_not(
    blocked: bool, app_id: str, collector: CollectorHandle
) -> None:
    """The same hook gets the same environ, and its update arrives, with or without werkzeug."""
    user = f"env-{blocked}"
    prelude = f"APP_ID = {app_id!r}; URL = {collector.url!r}; USER = {user!r}\n"
    if not blocked:
        prelude += "import werkzeug\n"  # installed and imported: must change nothing
    result = run_blocked(
        ["django", "starlette", "fastapi", "flask", *(["werkzeug"] if blocked else [])],
        prelude + WSGI_HOOKS_SCRIPT,
    )
    assert result == {"same_environ": True, "chunks": ["ok"], "werkzeug": not blocked}
    profile = collector.get_user(app_id, user)
    assert profile is not None
    assert profile["metadata"] == {
        "kind": "dict",
        "status": 201,
        "path": "/orders",
        "header": "kept",
    }
