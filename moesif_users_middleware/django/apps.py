"""The Django app config: adding ``moesif_users_middleware.django`` to INSTALLED_APPS
registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

from moesif_users_middleware.django.checks import check_middleware, check_settings


class MoesifUsersConfig(AppConfig):
    """Registers the ``moesif_users`` system checks."""

    name = "moesif_users_middleware.django"
    label = "moesif_users"
    verbose_name = "Moesif users"
    default = True

    def ready(self) -> None:
        checks.register(check_settings)
        checks.register(check_middleware)
