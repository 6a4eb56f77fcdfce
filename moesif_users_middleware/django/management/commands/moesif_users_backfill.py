"""``python manage.py moesif_users_backfill``: send every user to ``POST /v1/users/batch``.

Needs ``"moesif_users_middleware.django"`` in ``INSTALLED_APPS``. The work is done by
:mod:`moesif_users_middleware.backfill.django_source`, which documents how profiles are
built from the ``MOESIF_USERS`` hooks; the options are those of ``moesif-users send``
plus ``--chunk-size``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from moesif_users_middleware.backfill.django_source import add_arguments, run_command


class Command(BaseCommand):
    help = (
        "Send every user of the user model to Moesif (POST /v1/users/batch) in primary-key "
        "order, with checkpoint, rejects file, progress and --dry-run like `moesif-users send`."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        names = ("verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color")
        sending = {key: value for key, value in options.items() if key not in names}
        sending.pop("skip_checks", None)
        status = run_command(sending, stdout=self.stdout, stderr=sys.stderr)
        if status:
            raise CommandError(
                f"moesif_users_backfill ended with status {status}", returncode=status
            )
