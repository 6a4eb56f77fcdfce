"""Import isolation: the Starlette adapter imports no other framework; the package imports none;
nothing imports Celery, Mangum or pytest unless the user asks for that integration."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: block some top-level packages, import a module, report what
# got imported. A blocked import raises ImportError, so an import of one fails loudly.
PROBE = textwrap.dedent(
    """
    import json, sys

    blocked = set(sys.argv[2].split(","))

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in blocked:
                raise ImportError(f"blocked by the test: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    __import__(sys.argv[1])
    print(json.dumps(sorted(sys.modules)))
    """
)


def imported_modules(module: str, blocked: set[str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module, ",".join(sorted(blocked))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout)
    return modules


def roots(modules: list[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


@pytest.mark.skipif(find_spec("starlette") is None, reason="starlette is not installed")
def test_starlette_adapter_imports_no_other_framework() -> None:
    blocked = {"django", "flask", "werkzeug", "fastapi"}
    modules = imported_modules("moesif_users_middleware.starlette", blocked)
    assert "moesif_users_middleware.starlette" in modules
    assert "starlette" in modules  # the real one, not shadowed by our module
    assert "starlette.requests" in modules
    assert not roots(modules) & blocked
    other_adapters = {
        f"moesif_users_middleware.{name}" for name in ("django", "flask", "wsgi", "collector")
    }
    assert not other_adapters & set(modules)


def test_package_alone_imports_no_framework() -> None:
    blocked = {"django", "flask", "werkzeug", "fastapi", "starlette", "uvicorn"}
    modules = imported_modules("moesif_users_middleware", blocked)
    assert "moesif_users_middleware" in modules
    assert not roots(modules) & blocked


INTEGRATIONS = {"celery", "kombu", "billiard", "mangum", "pytest", "_pytest"}


@pytest.mark.parametrize(
    "module",
    [
        "moesif_users_middleware",
        "moesif_users_middleware.wsgi",
        "moesif_users_middleware.aws_lambda",
        "moesif_users_middleware.testing",
        *(
            f"moesif_users_middleware.{adapter}"
            for adapter in ("django", "flask", "starlette")
            if find_spec(adapter) is not None
        ),
    ],
)
def test_no_celery_mangum_or_pytest_unless_asked_for(module: str) -> None:
    """Celery, Mangum and pytest come in only through moesif_users_middleware.celery and
    the pytest plugin (testing.plugin); the Lambda wrapper and the recorder need none."""
    modules = imported_modules(module, INTEGRATIONS)
    assert module in modules
    assert not roots(modules) & INTEGRATIONS
    assert "moesif_users_middleware.celery" not in modules
    assert "moesif_users_middleware.testing.plugin" not in modules
