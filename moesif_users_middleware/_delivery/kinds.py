"""Record kinds: what the delivery engine needs to know about users and companies."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMPANIES", "KINDS", "USERS", "Key", "RecordKind"]

# (kind name, record id): records of different kinds never coalesce or share a batch.
Key = tuple[str, str]


@dataclass(frozen=True)
class RecordKind:
    """One kind of record: its id field, its batch endpoint, its name in messages."""

    name: str  # "users"
    id_field: str  # "user_id"
    batch_path: str  # "/v1/users/batch"
    noun: str  # "user"

    def key(self, record: dict[str, object]) -> Key:
        """The buffer key of one of this kind's records."""
        return self.name, record[self.id_field]  # type: ignore[return-value]


USERS = RecordKind("users", "user_id", "/v1/users/batch", "user")
COMPANIES = RecordKind("companies", "company_id", "/v1/companies/batch", "company")
KINDS: dict[str, RecordKind] = {USERS.name: USERS, COMPANIES.name: COMPANIES}
