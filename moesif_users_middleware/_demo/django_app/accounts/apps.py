"""The accounts app: companies, member profiles and API tokens."""

from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "moesif_users_middleware._demo.django_app.accounts"
    label = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
