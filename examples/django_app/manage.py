#!/usr/bin/env python
"""Django's command-line utility for the example project.

The project itself (settings, URLs, the ``accounts`` app) is
``moesif_users_middleware/_demo/django_app/``; the database defaults to ``db.sqlite3``
beside this file (``EXAMPLE_DB_PATH`` overrides it).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def main() -> None:
    if importlib.util.find_spec("moesif_users_middleware") is None:
        sys.path.append(str(Path(__file__).resolve().parents[2]))  # a checkout, not installed
    os.environ.setdefault(
        "DJANGO_SETTINGS_MODULE", "moesif_users_middleware._demo.django_app.settings"
    )
    os.environ.setdefault("EXAMPLE_DB_PATH", str(Path(__file__).resolve().with_name("db.sqlite3")))
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
