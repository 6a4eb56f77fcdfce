"""What ``moesif-users send --kind`` can send: users or companies.

Each :class:`SendKind` joins the sender's record kind (id field, batch endpoint, noun:
``_delivery/kinds.py``) with what only the backfill needs: the validator and the fields,
which give the CSV columns. Everything kind-specific in the readers, the runner and the
messages comes from this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .._delivery.kinds import COMPANIES, USERS, RecordKind
from ..models import COMPANY_FIELDS, USER_FIELDS, normalize_company, normalize_user

__all__ = ["DEFAULT_KIND", "SEND_KINDS", "SendKind"]

_NESTED: Final = ("campaign", "metadata")  # objects: CSV columns ``campaign.<field>`` etc.


@dataclass(frozen=True)
class SendKind:
    """One kind of record the backfill sends."""

    record: RecordKind
    normalize: Callable[[object, str], dict[str, Any]]  # raises ValidationError
    fields: tuple[str, ...]  # the reference's fields, in its order

    @property
    def name(self) -> str:
        """``users``: the plural, in messages, ``--kind`` and the checkpoint."""
        return self.record.name

    @property
    def noun(self) -> str:
        """``user``: the singular, in messages."""
        return self.record.noun

    @property
    def id_field(self) -> str:
        """``user_id``: the required field."""
        return self.record.id_field

    @property
    def batch_path(self) -> str:
        """``/v1/users/batch``."""
        return self.record.batch_path

    @property
    def columns(self) -> tuple[str, ...]:
        """The plain CSV columns: every field but the nested objects."""
        return tuple(name for name in self.fields if name not in _NESTED)

    def count(self, number: int) -> str:
        """``1 user``, ``0 users``, ``1,000 companies``."""
        return f"{number:,} {self.noun if number == 1 else self.name}"


SEND_KINDS: Final[dict[str, SendKind]] = {
    kind.name: kind
    for kind in (
        SendKind(USERS, normalize_user, USER_FIELDS),
        SendKind(COMPANIES, normalize_company, COMPANY_FIELDS),
    )
}
DEFAULT_KIND: Final = SEND_KINDS[USERS.name]
