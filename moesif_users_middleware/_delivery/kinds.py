"""Record kinds: what the delivery engine needs to know about users and companies."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMPANIES", "KINDS", "USERS", "Key", "RecordKind"]

# (kind name, record id): records of different kinds never coalesce or share a batch.
Key = tuple[str, str]


@dataclass(frozen=True)
class RecordKind:
    """One kind of record: its id field, its batch endpoint, its name in messages, and how
    many older distinct session tokens one key keeps pending (each is sent, as the API
    keeps every token; the oldest beyond this are dropped and counted)."""

    name: str  # "users"
    id_field: str  # "user_id"
    batch_path: str  # "/v1/users/batch"
    noun: str  # "user"
    max_tokens: int = 32

    def key(self, record: dict[str, object]) -> Key:
        """The buffer key of one of this kind's records."""
        return self.name, record[self.id_field]  # type: ignore[return-value]


USERS = RecordKind("users", "user_id", "/v1/users/batch", "user")
# A company's update carries the session token of each of its users' requests: a company
# with many users active in one flush window has as many tokens to associate.
COMPANIES = RecordKind("companies", "company_id", "/v1/companies/batch", "company", 256)
KINDS: dict[str, RecordKind] = {USERS.name: USERS, COMPANIES.name: COMPANIES}
