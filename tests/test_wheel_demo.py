"""The demo runs from a built wheel, away from the source tree.

The project is built into a wheel, the wheel is installed with ``pip install --target``
(no dependencies: those come from this environment), and ``python -m
moesif_users_middleware demo`` runs from another directory with only that install on
``PYTHONPATH``: the example apps the demo drives must be in the wheel, not in the
checkout's ``examples/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "moesif_users_middleware"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(
            find_spec(name) is None
            for name in ("django", "flask", "starlette", "fastapi", "uvicorn")
        ),
        reason="the demo needs the [all] extra",
    ),
    pytest.mark.skipif(
        find_spec("pip") is None,
        reason="builds the wheel with pip, which this environment lacks (a uv-made venv)",
    ),
]


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def source_files() -> set[str]:
    """Every file of the package in the source tree (what the wheel must hold)."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of what the build reads, so the checkout gets no build/ folder."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / PACKAGE, source / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), "."], source)
    (wheel,) = dist.glob("*.whl")
    return wheel


def test_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        missing = source_files() - set(archive.namelist())
    assert not missing, f"files of the package missing from the wheel: {sorted(missing)}"

    site = tmp_path / "site"
    install = ["install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    run([sys.executable, "-m", "pip", *install], tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    for name in ("MOESIF_APPLICATION_ID", "MOESIF_BASE_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)

    where = f"import {PACKAGE}; print({PACKAGE}.__file__)"
    imported = run([sys.executable, "-c", where], elsewhere, env)
    assert Path(imported.strip()).is_relative_to(site)  # the wheel's copy, not the checkout's

    out = run([sys.executable, "-m", PACKAGE, "demo", "--users", "8"], elsewhere, env)
    assert "sender flushed: True; 8 profiles stored" in out, out
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("user_id")))
    columns = ["user_id", "company", "ip_address", "tokens", "campaign", "user agent", "metadata"]
    assert [c for c in columns if c in lines[header]] == columns
    rows = lines[header + 2 : header + 10]  # below the header and its underline
    assert len(rows) == 8, out
    assert all(row.split()[0] for row in rows)
    for framework in ("Flask", "FastAPI", "Starlette", "Django"):
        assert f"  {framework} " in out, out
