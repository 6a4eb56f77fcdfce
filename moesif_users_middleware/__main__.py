"""``python -m moesif_users_middleware`` — the same as the ``moesif-users`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
