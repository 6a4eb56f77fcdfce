"""``manage.py seed_demo``: demo companies and users; prints each user's API token."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from ...models import Company, Profile
from ...tokens import issue_token

COMPANIES = [
    ("acme", "Acme Inc.", "enterprise"),
    ("globex", "Globex Corporation", "pro"),
    ("initech", "Initech", "free"),
]


class Command(BaseCommand):
    help = "Create demo companies and users (idempotent) and print their API tokens as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=6, help="number of demo users")
        parser.add_argument(
            "--password", default=None, help="password for every demo user (default: none)"
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        companies = [
            Company.objects.update_or_create(slug=slug, defaults={"name": name, "plan": plan})[0]
            for slug, name, plan in COMPANIES
        ]
        rows = []
        for number in range(1, options["users"] + 1):
            username = f"user{number:02d}"
            user, created = get_user_model().objects.get_or_create(
                username=username,
                defaults={
                    "email": f"{username}@example.com",
                    "first_name": "Demo",
                    "last_name": f"User {number}",
                },
            )
            if created or options["password"] is not None:
                if options["password"] is None:
                    user.set_unusable_password()
                else:
                    user.set_password(options["password"])
                user.save()
            company = companies[(number - 1) % len(companies)]
            Profile.objects.update_or_create(
                user=user, defaults={"company": company, "title": "Engineer"}
            )
            rows.append(
                {
                    "id": user.pk,
                    "username": username,
                    "company": company.slug,
                    "token": issue_token(user),
                }
            )
        self.stdout.write(json.dumps(rows, indent=2))
