"""The compatibility matrix: ``python -m nox`` (``pip install nox uv`` first; ``-r`` reuses venvs).

Sessions:

- ``tests-3.X(frameworks='oldest')``: the whole suite with every framework at the oldest
  release this package supports (``OLDEST`` below; the same on every Python).
- ``tests-3.X(frameworks='newest')``: the whole suite with the newest releases.
- ``core``: no web framework installed: the tests that need none (the rest skip), plus
  import-isolation checks of every core module.
- ``lint``: ruff and ``mypy --strict``.

Examples::

    python -m nox -s "tests-3.10(frameworks='oldest')"
    python -m nox -s core lint
    python -m nox                       # everything (sequentially)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
FRAMEWORKS = ["oldest", "newest"]

nox.options.sessions = ["tests", "core", "lint"]
# uv makes the many installs fast; plain virtualenv/pip when uv is not installed.
nox.options.default_venv_backend = "uv|virtualenv"

# The oldest releases that pass. Starlette before 0.42 builds middleware as
# ``cls(app=app, **options)``, which the adapter's positional-only ``app`` rejects; the
# demo passes ``TestClient(client=...)``, new in 0.44; FastAPI 0.115.7 is the first
# release that allows Starlette 0.44.
OLDEST = {
    "django": "4.2",
    "flask": "2.3.0",
    "werkzeug": "2.3.0",
    "starlette": "0.44.0",
    "fastapi": "0.115.7",
    "uvicorn": "0.29.0",
    "httpx": "0.24.0",
    "gunicorn": "22.0.0",
    "flask-login": "0.6.2",  # 0.6.0/0.6.1 import werkzeug.routing.parse_rule (gone in 2.3)
    "celery": "5.3.0",
    "mangum": "0.17.0",
}

# Tests that run with no framework installed need only these (httpx is a dependency).
CORE_TEST_TOOLS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100"]

# The core modules, imported one by one in a fresh interpreter with every web framework
# blocked: each must import, and none may pull in a framework.
IMPORT_ISOLATION = """
import importlib, pkgutil, sys

FRAMEWORKS = {
    "django", "flask", "werkzeug", "starlette", "fastapi", "uvicorn", "gunicorn",
    "celery", "mangum", "pytest",
}
# Modules that belong to one framework (or the collector, Celery, pytest) and so must fail
# to import here.
ADAPTERS = {
    "django", "flask", "starlette", "collector", "backfill.django_source",
    "_capture.wsgi_request", "_flask_login", "celery", "testing.plugin",
}
PREFIX = "moesif_users_middleware."

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in FRAMEWORKS:
            raise ImportError(f"framework import blocked: {name}")
        return None

sys.meta_path.insert(0, Blocker())
import moesif_users_middleware as package

names = ["moesif_users_middleware"]
for info in pkgutil.walk_packages(package.__path__, PREFIX):
    short = info.name.removeprefix(PREFIX)
    framework = any(short == a or short.startswith(a + ".") for a in ADAPTERS)
    framework |= short.startswith("_demo.")  # the example apps; _demo itself imports none
    if not framework and not short.endswith("__main__"):  # __main__ would run the CLI
        names.append(info.name)
for name in names:
    importlib.import_module(name)
loaded = sorted({m.partition(".")[0] for m in sys.modules} & FRAMEWORKS)
assert not loaded, f"a core module imported {loaded}"
for adapter in sorted(ADAPTERS):
    try:
        importlib.import_module(PREFIX + adapter)
    except ImportError:
        continue
    raise AssertionError(f"{PREFIX}{adapter} imported with no framework installed")
print(f"import isolation: {len(names)} core modules import no framework")
"""


# Prints the framework releases a session actually tested (for the support table).
VERSIONS = """
from importlib.metadata import PackageNotFoundError, version

names = [
    "django", "flask", "werkzeug", "starlette", "fastapi", "uvicorn", "httpx", "gunicorn",
    "celery", "mangum",
]
found = []
for name in names:
    try:
        found.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        pass
print("versions: " + " ".join(found))
"""


def _find_pyenv_pythons() -> None:
    """Let pyenv's shims resolve every installed 3.10-3.13 (not only the global one)."""
    pyenv = shutil.which("pyenv")
    if pyenv is None or "PYENV_VERSION" in os.environ:
        return
    try:
        bare = subprocess.run(
            [pyenv, "versions", "--bare"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
        current = subprocess.run(
            [pyenv, "version-name"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return
    wanted = [name for name in bare if name.rpartition(".")[0] in PYTHONS]
    if wanted:
        ordered = [name for name in current.split(":") if name] + wanted
        os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys(ordered))


_find_pyenv_pythons()


def _constraints(session: nox.Session, pins: dict[str, str]) -> str:
    path = Path(session.create_tmp()) / "constraints.txt"
    path.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    return str(path)


def _run_script(session: nox.Session, name: str, source: str) -> None:
    """Run ``source`` in the session's Python (from a file: nox echoes ``-c`` code whole)."""
    path = Path(session.create_tmp()) / name
    path.write_text(source)
    session.run("python", str(path))


def _pytest(session: nox.Session) -> None:
    """The suite; arguments after ``--`` go to pytest (``nox -s core -- -k sender``)."""
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHONS)
@nox.parametrize("frameworks", FRAMEWORKS)
def tests(session: nox.Session, frameworks: str) -> None:
    """The whole suite against the oldest or the newest supported framework releases."""
    if frameworks == "oldest":
        session.install("-e", ".[dev]", "-c", _constraints(session, OLDEST))
    else:
        session.install("--upgrade", "-e", ".[dev]")
    _run_script(session, "versions.py", VERSIONS)
    _pytest(session)


@nox.session(python=PYTHONS[0])
def core(session: nox.Session) -> None:
    """No framework installed: the framework-free tests, then import isolation."""
    session.install("-e", ".", *CORE_TEST_TOOLS)
    _run_script(session, "import_isolation.py", IMPORT_ISOLATION)
    _pytest(session)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff (lint + format) and mypy --strict, as ``.ci/run`` runs them."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "ruff", "check", ".")
    session.run("python", "-m", "ruff", "format", "--check", ".")
    session.run("python", "-m", "mypy")
