"""Validating a batch of records: every one checked, errors naming its index."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..models import ValidationError, normalize_company, normalize_user

__all__ = ["normalize_companies", "normalize_users"]


def normalize_users(users: Iterable[Any]) -> list[dict[str, Any]]:
    """Validate every user of a batch; errors name the index (``users[3].user_id``)."""
    return _normalize_all(users, "users", normalize_user)


def normalize_companies(companies: Iterable[Any]) -> list[dict[str, Any]]:
    """Validate every company of a batch; errors name the index (``companies[3].company_id``)."""
    return _normalize_all(companies, "companies", normalize_company)


def _normalize_all(
    records: Iterable[Any], name: str, normalize: Callable[[object, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
        raise ValidationError(name, f"must be a list of {name}, not {type(records).__name__}")
    out: list[dict[str, Any]] = []
    prefix = f"{name}["
    for index, record in enumerate(records):
        try:
            out.append(normalize(record, f"{name}[{index}]"))
        except ValidationError as exc:
            field = exc.field if exc.field.startswith(prefix) else f"{name}[{index}].{exc.field}"
            raise ValidationError(field, exc.message) from None
    return out
