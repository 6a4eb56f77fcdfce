"""Settings of the example API: a small Django project recording user profiles in Moesif.

Configured from the environment:

- ``MOESIF_APPLICATION_ID`` (required to record anything; without it the middleware
  switches itself off) and ``MOESIF_BASE_URL`` (e.g. the local collector,
  ``http://127.0.0.1:8787``; default ``https://api.moesif.net``);
- ``EXAMPLE_DB_PATH`` (SQLite file; default ``db.sqlite3`` in the current directory);
- ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG``.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-insecure-secret-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "moesif_users_middleware.django",  # system checks for MOESIF_USERS
    "moesif_users_middleware._demo.django_app.accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After AuthenticationMiddleware; it records the user once the view has answered.
    "moesif_users_middleware.django.MoesifUsersMiddleware",
]

MOESIF_USERS = {
    # APPLICATION_ID and BASE_URL come from MOESIF_APPLICATION_ID / MOESIF_BASE_URL.
    "ENABLED": bool(os.environ.get("MOESIF_APPLICATION_ID")),
    # The user id defaults to request.user.pk; company and metadata come from the
    # user's record, which the views already loaded.
    "IDENTIFY_COMPANY": "moesif_users_middleware._demo.django_app.accounts.moesif_hooks.identify_company",
    "GET_METADATA": "moesif_users_middleware._demo.django_app.accounts.moesif_hooks.get_metadata",
    "GET_COMPANY_DOMAIN": (
        "moesif_users_middleware._demo.django_app.accounts.moesif_hooks.get_company_domain"
    ),
    "GET_COMPANY_METADATA": (
        "moesif_users_middleware._demo.django_app.accounts.moesif_hooks.get_company_metadata"
    ),
}

ROOT_URLCONF = "moesif_users_middleware._demo.django_app.urls"
WSGI_APPLICATION = "moesif_users_middleware._demo.django_app.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB_PATH", "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"moesif_users_middleware": {"handlers": ["console"], "level": "INFO"}},
}
