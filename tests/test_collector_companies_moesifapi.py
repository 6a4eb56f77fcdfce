"""Moesif's own Python client (``moesifapi``, installed with ``moesifdjango``) against the
collector: what its user and company calls send is accepted and stored as Moesif would.

The client is configured through class attributes (``Configuration.BASE_URI``), set per
test. Skips where ``moesifapi`` is not installed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from samples import REFERENCE_COMPANY
from servers import CollectorHandle

pytest.importorskip("starlette")
pytest.importorskip("moesifapi", reason="needs moesifapi (pip install moesifdjango)")

from moesifapi.configuration import Configuration
from moesifapi.exceptions.api_exception import APIException
from moesifapi.models import CampaignModel, CompanyModel, UserModel
from moesifapi.moesif_api_client import MoesifAPIClient
from moesifapi.update_companies import Company as CompanyCalls
from moesifapi.update_users import User as UserCalls

WHEN = datetime(2026, 5, 1, 12, 30, tzinfo=timezone.utc)


@pytest.fixture
def api(collector: CollectorHandle, app_id: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """moesifapi's ``ApiController``, pointed at the collector under ``app_id``."""
    monkeypatch.setattr(Configuration, "BASE_URI", collector.url)
    monkeypatch.setattr(Configuration, "application_id", app_id)
    return MoesifAPIClient(app_id).api


def stored_company(collector: CollectorHandle, app_id: str, company_id: str) -> dict[str, Any]:
    found = collector.get_company(app_id, company_id)
    assert found is not None, f"company {company_id!r} not stored"
    return found


def test_update_company_with_a_company_model(
    api: Any, collector: CollectorHandle, app_id: str
) -> None:
    api.update_company(
        CompanyModel(
            company_id="12345",
            company_domain="acmeinc.com",
            modified_time=WHEN,
            ip_address="203.0.113.9",
            session_token="api-key-1",
            metadata=REFERENCE_COMPANY["metadata"],
            campaign=CampaignModel(utm_source="google", utm_medium="cpc"),
        )
    )

    stored = stored_company(collector, app_id, "12345")
    assert stored["company_domain"] == "acmeinc.com"
    assert stored["modified_time"] == "2026-05-01T12:30:00.000Z"
    assert stored["ip_address"] == "203.0.113.9"
    assert stored["session_tokens"] == ["api-key-1"]
    assert stored["metadata"] == REFERENCE_COMPANY["metadata"]
    assert stored["campaign"] == {"utm_source": "google", "utm_medium": "cpc"}  # nulls dropped


def test_update_companies_batch_merges_like_moesif(
    api: Any, collector: CollectorHandle, app_id: str
) -> None:
    api.update_companies_batch(
        [
            CompanyModel(company_id="acme", metadata={"plan": "free", "seats": {"used": 3}}),
            CompanyModel(company_id="globex", company_domain="globex.com"),
            CompanyModel(company_id="acme", session_token="k2", metadata={"seats": {"max": 10}}),
        ]
    )

    acme = stored_company(collector, app_id, "acme")
    assert acme["metadata"] == {"plan": "free", "seats": {"used": 3, "max": 10}}
    assert acme["session_tokens"] == ["k2"]
    assert stored_company(collector, app_id, "globex")["company_domain"] == "globex.com"
    assert collector.stats(app_id, "companies")["records"] == 3


def test_moesifapi_company_helpers_send_dicts(
    api: Any, collector: CollectorHandle, app_id: str
) -> None:
    """The dict-taking helpers (what Moesif's middlewares call) go through the same routes."""
    calls = CompanyCalls()
    calls.update_company(
        {**REFERENCE_COMPANY, "company_id": "dict-co", "modified_time": "2026-05-01T12:30:00Z"},
        api,
        False,
    )
    calls.update_companies_batch(
        [{"company_id": "dict-co", "session_token": "t"}, {"company_id": "other"}], api, False
    )

    stored = stored_company(collector, app_id, "dict-co")
    assert stored["company_domain"] == "acmeinc.com"
    assert stored["session_tokens"] == ["t"]
    assert stored["campaign"] == REFERENCE_COMPANY["campaign"]
    assert stored_company(collector, app_id, "other")["session_tokens"] == []


def test_a_refused_company_raises_api_exception_naming_the_field(
    api: Any, collector: CollectorHandle, app_id: str
) -> None:
    with pytest.raises(APIException) as caught:
        api.update_company(CompanyModel(company_id="bad", ip_address="not-an-ip"))
    with pytest.raises(APIException) as batch:
        api.update_companies_batch(
            [CompanyModel(company_id="ok"), CompanyModel(company_domain="x")]
        )

    assert caught.value.response_code == 400
    assert '"field":"ip_address"' in caught.value.context.response.raw_body
    assert batch.value.response_code == 400
    assert '"field":"company_id"' in batch.value.context.response.raw_body
    assert collector.list_companies(app_id) == []


def test_update_user_and_users_batch(api: Any, collector: CollectorHandle, app_id: str) -> None:
    api.update_user(
        UserModel(
            user_id="u1",
            company_id="acme",
            modified_time=WHEN,
            session_token="tok-1",
            user_agent_string="moesifapi-test/1",
            metadata={"email": "u1@acme.example"},
            campaign=CampaignModel(utm_campaign="launch"),
        )
    )
    api.update_users_batch(
        [
            UserModel(user_id="u1", metadata={"plan": "pro"}),
            UserModel(user_id="u2", company_id="acme"),
        ]
    )
    UserCalls().update_user({"user_id": "u3", "company_id": "acme"}, api, False)

    u1 = collector.get_user(app_id, "u1")
    assert u1 is not None
    assert u1["company_id"] == "acme"
    assert u1["session_tokens"] == ["tok-1"]
    assert u1["user_agent_string"] == "moesifapi-test/1"
    assert u1["metadata"] == {"email": "u1@acme.example", "plan": "pro"}
    assert u1["campaign"] == {"utm_campaign": "launch"}
    assert [user["user_id"] for user in collector.list_users(app_id)] == ["u1", "u2", "u3"]
