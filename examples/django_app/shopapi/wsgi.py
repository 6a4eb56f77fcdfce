"""WSGI entry point: ``gunicorn shopapi.wsgi:application`` (from ``examples/django_app``)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shopapi.settings")

application = get_wsgi_application()
