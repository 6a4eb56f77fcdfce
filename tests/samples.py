"""Sample data shared by the tests."""

from __future__ import annotations

from typing import Any

from moesif_users_middleware._delivery.retry import RetryPolicy


def fast_retry(batch_deadline: float = 3.0, retry_after_cap: float = 5.0) -> RetryPolicy:
    """The sender's retry timing shrunk for tests: backoff of tens of milliseconds."""
    return RetryPolicy(
        backoff_base=0.02,
        backoff_cap=0.1,
        batch_deadline=batch_deadline,
        retry_after_cap=retry_after_cap,
        cycle_backoff_base=0.02,
        cycle_backoff_cap=0.1,
    )


# The example user of the Users API reference (POST /v1/users).
REFERENCE_USER: dict[str, Any] = {
    "user_id": "12345",
    "company_id": "67890",
    "session_token": "XXXXXXXXXX",
    "campaign": {
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "adwords",
        "utm_term": "api+tooling",
        "utm_content": "landing",
    },
    "metadata": {
        "email": "john@acmeinc.com",
        "first_name": "John",
        "last_name": "Doe",
        "title": "Software Engineer",
        "sales_info": {
            "stage": "Customer",
            "lifetime_value": 24000,
            "account_owner": "mary@contoso.com",
        },
    },
}


# The example company of the Companies API reference (POST /v1/companies).
REFERENCE_COMPANY: dict[str, Any] = {
    "company_id": "12345",
    "company_domain": "acmeinc.com",
    "campaign": {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "adwords"},
    "metadata": {
        "org_name": "Acme, Inc",
        "plan_name": "Free",
        "mrr": 24000,
        "demographics": {"alexa_ranking": 500000, "employee_count": 47},
    },
}
