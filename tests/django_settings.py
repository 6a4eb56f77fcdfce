"""Django for the Django adapter tests: settings configured in-process, once, with a
migrated SQLite database in a temporary directory (removed at exit)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

OURS = "moesif_users_middleware.django.MoesifUsersMiddleware"
SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
MIDDLEWARE = [SESSION, AUTH, OURS]


def settings_dict(db_path: Path) -> dict[str, Any]:
    return {
        "DEBUG": False,
        "SECRET_KEY": "django-adapter-tests-only",
        "ALLOWED_HOSTS": ["testserver", "127.0.0.1", "localhost"],
        "ROOT_URLCONF": "django_views",
        "INSTALLED_APPS": [
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "moesif_users_middleware.django",
        ],
        "MIDDLEWARE": MIDDLEWARE,
        "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db_path)}},
        "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
        # Fast hashing: the tests log in with passwords many times.
        "PASSWORD_HASHERS": ["django.contrib.auth.hashers.MD5PasswordHasher"],
        "USE_TZ": True,
        # Each test turns it on with override_settings (its own application id).
        "MOESIF_USERS": {"ENABLED": False},
    }


def configure() -> None:
    """Configure Django (once per process) and create the tables."""
    from django.conf import settings

    if settings.configured:
        return
    import django
    from django.core.management import call_command

    directory = Path(tempfile.mkdtemp(prefix="moesif-django-tests-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    settings.configure(**settings_dict(directory / "db.sqlite3"))
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
