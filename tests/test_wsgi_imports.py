"""The Flask and WSGI adapters import no other web framework (checked in fresh interpreters)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest

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


@pytest.mark.skipif(find_spec("werkzeug") is None, reason="werkzeug is not installed")
def test_wsgi_adapter_imports_without_flask() -> None:
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
    assert result["loaded"] == ["werkzeug"]


def test_wsgi_adapter_without_werkzeug_hands_hooks_the_environ() -> None:
    result = run_blocked(
        ["django", "starlette", "fastapi", "flask", "werkzeug"],
        """
        import json, sys
        from moesif_users_middleware.wsgi import MoesifUsersMiddleware

        seen = []

        def identify_user(request, response):
            seen.append([type(request).__name__, response.status_code])
            return None  # record nothing: this test needs no collector

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        wrapped = MoesifUsersMiddleware(app, application_id="x", identify_user=identify_user)
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "127.0.0.1"}
        body = wrapped(environ, lambda status, headers, exc_info=None: None)
        chunks = list(body)
        body.close()
        print(json.dumps({"seen": seen, "chunks": [c.decode() for c in chunks],
                          "werkzeug": "werkzeug" in sys.modules}))
        """,
    )
    assert result == {"seen": [["dict", 200]], "chunks": ["ok"], "werkzeug": False}
