"""Hooks for ``settings.MOESIF_USERS``: company, metadata and the company's profile.

They run after the view, and only for a request whose user id is known, so
``request.user`` is the loaded user. They read only what the views already loaded
(``select_related``), so they make no query, which also keeps them safe under ASGI.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse

from ...accounts import company_domain, company_metadata


def _profile(request: HttpRequest) -> Any:
    return getattr(request.user, "profile", None)


def identify_company(request: HttpRequest, response: HttpResponse) -> str | None:
    """The slug of the user's company."""
    profile = _profile(request)
    return profile.company.slug if profile is not None else None


def get_metadata(request: HttpRequest, response: HttpResponse) -> dict[str, Any]:
    """Name, email and plan from the user record."""
    user: Any = request.user
    profile = _profile(request)
    metadata: dict[str, Any] = {
        "email": user.email,
        "name": user.get_full_name() or user.username,
        "date_joined": user.date_joined.isoformat(),
    }
    if profile is not None:
        metadata["title"] = profile.title
        metadata["plan"] = profile.company.plan
    return metadata


def get_company_domain(request: HttpRequest, response: HttpResponse) -> str | None:
    """The company's website domain (called only when ``identify_company`` gave an id)."""
    return company_domain(_profile(request).company.slug)


def get_company_metadata(request: HttpRequest, response: HttpResponse) -> dict[str, Any]:
    """The company's name, revenue and plan."""
    company = _profile(request).company
    metadata = company_metadata(company.slug)
    metadata.update(org_name=company.name, plan_name=company.plan)
    return metadata
