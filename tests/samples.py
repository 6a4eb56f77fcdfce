"""Sample data shared by the tests."""

from __future__ import annotations

from typing import Any

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
