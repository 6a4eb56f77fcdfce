"""Bulk backfill: push existing user profiles through ``POST /v1/users/batch`` (company
profiles through ``POST /v1/companies/batch``).

``moesif-users send [--kind companies] FILE|-`` (see :mod:`.command`; the kinds in
:mod:`.kinds`) reads JSON, JSON Lines or CSV (:mod:`.readers` opens the format's reader),
validates every record, and sends batches through the library's transport with the
sender's retry rules (:mod:`.runner`; its two sides: :mod:`.batching` and
:mod:`.posting`), writing a checkpoint after every confirmed batch (:mod:`.checkpoint`)
and invalid records to a rejects file (:mod:`.rejects`). Django
projects run ``python manage.py moesif_users_backfill`` for their users
(:mod:`.django_source`).
"""

from __future__ import annotations

from .arguments import configure_parser
from .command import run
from .options import BackfillOptions
from .runner import Backfill
from .summary import Summary

__all__ = ["Backfill", "BackfillOptions", "Summary", "configure_parser", "run"]
