"""``python manage.py moesif_users_backfill`` over a SQLite project of a few thousand users.

The command runs in subprocesses of a throwaway Django project (its own settings and
database, so nothing clashes with the adapter's in-process Django tests) and delivers
to the real collector. Profile building is also tested in process, without a database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import django_settings
import pytest

pytest.importorskip("django")

from conftest import CollectorHandle

django_settings.configure()

from django.contrib.auth import get_user_model  # noqa: E402

from moesif_users_middleware.backfill.django_source import (  # noqa: E402
    BackfillConfigurationError,
    ProfileBuilder,
    default_state_paths,
)
from moesif_users_middleware.backfill.items import Skipped, Unparsed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
USERS = 3000

SETTINGS = """
SECRET_KEY = "backfill-tests"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "moesif_users_middleware.django",
]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}}}}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
MOESIF_USERS = {{
    "APPLICATION_ID": {app_id!r},
    "BASE_URL": {base_url!r},
    "IDENTIFY_COMPANY": "hooks.identify_company",
    "GET_METADATA": "hooks.get_metadata",
    "GET_SESSION_TOKEN": "hooks.get_session_token",  # no `user` parameter: not used
}}
"""

HOOKS = """
def identify_company(request, response, user=None):
    user = user if user is not None else request.user
    if user.pk % 100 == 13:
        raise RuntimeError("no company for unlucky users")
    return "company-%d" % (user.pk % 7)


def get_metadata(request, response, user=None):
    user = user if user is not None else request.user
    return {"email": user.email, "username": user.username, "staff": user.is_staff}


def get_session_token(request, response):
    return request.META.get("HTTP_X_API_KEY")
"""

MANAGE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
"""

SEED = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
import django
django.setup()
from django.contrib.auth import get_user_model
User = get_user_model()
action, count = sys.argv[1], int(sys.argv[2])
if action == "create":
    User.objects.bulk_create(
        [User(username="user-%d" % i, email="user-%d@example.com" % i) for i in range(count)],
        batch_size=1000,
    )
elif action == "delete-first":
    pks = list(User.objects.order_by("pk").values_list("pk", flat=True)[:count])
    User.objects.filter(pk__in=pks).delete()
print(User.objects.count())
"""


class Project:
    """A throwaway Django project with ``USERS`` users, run through subprocesses."""

    def __init__(self, directory: Path, app_id: str, base_url: str) -> None:
        self.directory = directory
        # The database is not in the directory the command runs from: its checkpoint
        # belongs beside the database, not in the working directory.
        self.data = directory / "data"
        self.data.mkdir()
        (directory / "settings.py").write_text(
            SETTINGS.format(db=str(self.data / "db.sqlite3"), app_id=app_id, base_url=base_url)
        )
        (directory / "hooks.py").write_text(HOOKS)
        (directory / "manage.py").write_text(MANAGE)
        (directory / "seed.py").write_text(SEED)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(directory), str(ROOT)]),
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.run("manage.py", "migrate", "--verbosity", "0")
        self.run("seed.py", "create", str(USERS))

    def run(self, script: str, *argv: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, script, *argv],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result

    def backfill(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "moesif_users_backfill", "--progress", "log", *argv],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start_backfill(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "manage.py", "moesif_users_backfill", "--progress", "none", *argv],
            cwd=self.directory,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def checkpoint_path(self) -> Path:
        return self.data / "db.sqlite3.moesif_users_backfill.checkpoint"

    def checkpoint(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.checkpoint_path.read_text())
        return data

    def rejects(self) -> list[dict[str, Any]]:
        path = self.data / "db.sqlite3.moesif_users_backfill.rejects.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def project(tmp_path: Path, collector: CollectorHandle, app_id: str) -> Project:
    return Project(tmp_path, app_id, collector.url)


UNLUCKY = [pk for pk in range(1, USERS + 1) if pk % 100 == 13]  # IDENTIFY_COMPANY raises


def test_the_command_delivers_every_user(
    project: Project, collector: CollectorHandle, app_id: str
) -> None:
    dry = project.backfill("--dry-run")
    assert dry.returncode == 1, dry.stderr  # the unlucky users' hook raised
    assert f"valid (dry run, nothing sent): {USERS - len(UNLUCKY):,} users" in dry.stdout
    assert collector.stats(app_id)["requests"] == 0

    result = project.backfill("--batch-size", "250", "--chunk-size", "700")
    assert result.returncode == 1, result.stderr
    assert f"checkpoint: {project.checkpoint_path}\n" in result.stderr  # says where it is
    assert not list(project.directory.glob("*moesif_users_backfill*"))  # not in the cwd
    assert "GET_SESSION_TOKEN'] takes no `user` parameter" in result.stderr
    assert f"progress: {USERS:,}/{USERS:,} users (100.0%)" in result.stderr
    assert f"sent: {USERS - len(UNLUCKY):,} users" in result.stdout

    stats = collector.stats(app_id)
    assert (stats["records"], stats["users"]) == (USERS - len(UNLUCKY), USERS - len(UNLUCKY))
    first = collector.get_user(app_id, "1")
    assert first is not None
    assert first["company_id"] == "company-1"
    assert first["metadata"] == {
        "email": "user-0@example.com",
        "username": "user-0",
        "staff": False,
    }
    assert first["session_tokens"] == []
    rejects = project.rejects()
    assert [entry["pk"] for entry in rejects] == UNLUCKY
    assert {entry["field"] for entry in rejects} == {"IDENTIFY_COMPANY"}
    assert "no company for unlucky users" in rejects[0]["message"]
    checkpoint = project.checkpoint()
    assert (checkpoint["position"], checkpoint["cursor"], checkpoint["complete"]) == (
        USERS,
        USERS,
        True,
    )


def test_an_interrupted_command_resumes_after_the_last_confirmed_pk(
    project: Project, collector: CollectorHandle, app_id: str
) -> None:
    process = project.start_backfill("--batch-size", "100", "--max-rate", "1500")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if project.checkpoint()["position"] >= 800:
                    break
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, err
    cursor = project.checkpoint()["cursor"]
    delivered_first = collector.stats(app_id)["records"]
    unlucky_pks = set(UNLUCKY)
    assert delivered_first == len([pk for pk in range(1, cursor + 1) if pk not in unlucky_pks])

    # Users already sent disappear meanwhile: an offset would now skip unsent ones.
    project.run("seed.py", "delete-first", "300")
    result = project.backfill()
    assert result.returncode == 1, result.stderr
    resent = collector.stats(app_id)["records"] - delivered_first
    assert resent == len([pk for pk in range(cursor + 1, USERS + 1) if pk not in unlucky_pks])
    assert collector.stats(app_id)["users"] == USERS - len(UNLUCKY)
    assert sorted(entry["pk"] for entry in project.rejects()) == sorted(unlucky_pks)


def test_the_checkpoint_option_overrides_the_default_place(
    project: Project, collector: CollectorHandle, app_id: str
) -> None:
    chosen = project.directory / "elsewhere" / "my.checkpoint"
    chosen.parent.mkdir()
    result = project.backfill("--checkpoint", str(chosen), "--batch-size", "1000")
    assert result.returncode == 1, result.stderr
    assert "checkpoint:" not in result.stderr  # the user chose it
    assert json.loads(chosen.read_text())["complete"] is True
    assert not project.checkpoint_path.exists()
    again = project.backfill("--checkpoint", str(chosen))
    assert "Nothing to do" in again.stdout
    assert collector.stats(app_id)["records"] == USERS - len(UNLUCKY)


# -- profile building, in process --------------------------------------------------------------


def test_default_state_paths_beside_sqlite_else_in_the_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from django.db import connections

    users = get_user_model()._default_manager.all()
    connection = connections[users.db]
    database = Path(connection.settings_dict["NAME"]).resolve()
    checkpoint, rejects = default_state_paths(users)
    assert checkpoint == database.parent / f"{database.name}.moesif_users_backfill.checkpoint"
    assert rejects == database.parent / f"{database.name}.moesif_users_backfill.rejects.jsonl"

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setitem(connection.settings_dict, "NAME", ":memory:")
    memory, _ = default_state_paths(users)
    assert memory.parent == tmp_path / "state" / "moesif_users_middleware"

    monkeypatch.setattr(connection, "vendor", "postgresql")
    monkeypatch.setitem(connection.settings_dict, "NAME", "shop")
    monkeypatch.setitem(connection.settings_dict, "HOST", "db-1.internal")
    shop, shop_rejects = default_state_paths(users)
    assert shop.parent == tmp_path / "state" / "moesif_users_middleware"
    assert shop.name.startswith("moesif_users_backfill.postgresql.shop.")
    assert shop.name.endswith(".checkpoint")
    assert shop_rejects.parent == shop.parent
    monkeypatch.setitem(connection.settings_dict, "HOST", "db-2.internal")
    assert default_state_paths(users)[0] != shop  # another server, another checkpoint


def _user(**fields: Any) -> Any:
    model = get_user_model()
    defaults = {"pk": 42, "username": "ada", "email": "ada@example.com", "first_name": "Ada"}
    return model(**{**defaults, **fields})


def test_defaults_are_the_pk_and_the_reserved_metadata() -> None:
    builder = ProfileBuilder.from_settings({}, warn=pytest.fail)
    assert builder.build(_user()) == {
        "user_id": "42",
        "metadata": {"email": "ada@example.com", "first_name": "Ada"},
    }


def test_get_user_profile_replaces_everything() -> None:
    def profile(user: Any) -> Any:
        return None if user.pk == 1 else {"user_id": user.username, "company_id": "x"}

    builder = ProfileBuilder.from_settings(
        {"GET_USER_PROFILE": profile, "IDENTIFY_USER": lambda request, response: "ignored"},
        warn=pytest.fail,
    )
    assert builder.build(_user()) == {"user_id": "ada", "company_id": "x"}
    assert builder.build(_user(pk=1)) is Skipped


def test_identify_user_without_a_user_parameter_is_refused() -> None:
    def identify_user(request: Any, response: Any) -> str:
        return str(request.user.username)

    with pytest.raises(BackfillConfigurationError, match="IDENTIFY_USER"):
        ProfileBuilder.from_settings({"IDENTIFY_USER": identify_user}, warn=pytest.fail)

    def identify_by_name(request: Any, response: Any, *, user: Any = None) -> str:
        return str((user or request.user).username)

    builder = ProfileBuilder.from_settings({"IDENTIFY_USER": identify_by_name}, warn=pytest.fail)
    assert builder.build(_user())["user_id"] == "ada"


def test_a_configured_metadata_hook_without_user_turns_default_metadata_off() -> None:
    warnings: list[str] = []
    builder = ProfileBuilder.from_settings(
        {"GET_METADATA": lambda request, response: {"from": "request"}}, warn=warnings.append
    )
    assert builder.build(_user()) == {"user_id": "42"}
    assert len(warnings) == 1
    assert "GET_METADATA" in warnings[0]


def test_a_raising_hook_rejects_the_user_with_its_name() -> None:
    def get_campaign(request: Any, response: Any, user: Any = None) -> Any:
        raise ValueError("boom")

    builder = ProfileBuilder.from_settings({"GET_CAMPAIGN": get_campaign}, warn=pytest.fail)
    result = builder.build(_user())
    assert isinstance(result, Unparsed)
    assert (result.field, result.message) == ("GET_CAMPAIGN", "the hook raised ValueError: boom")


def test_dotted_paths_are_resolved() -> None:
    builder = ProfileBuilder.from_settings(
        {"GET_USER_PROFILE": "textwrap:dedent"}, warn=pytest.fail
    )
    assert builder.get_user_profile is textwrap.dedent
    with pytest.raises(ImportError, match="GET_USER_PROFILE"):
        ProfileBuilder.from_settings({"GET_USER_PROFILE": "no.such.module"}, warn=pytest.fail)
