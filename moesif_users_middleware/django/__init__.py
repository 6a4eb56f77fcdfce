"""Django adapter: keep Moesif user profiles current from a Django project.

    # settings.py
    INSTALLED_APPS = [..., "moesif_users_middleware.django"]  # system checks
    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "moesif_users_middleware.django.MoesifUsersMiddleware",
    ]
    MOESIF_USERS = {
        "APPLICATION_ID": "...",  # or MOESIF_APPLICATION_ID
        "IDENTIFY_COMPANY": "myapp.hooks.identify_company",
        "GET_METADATA": "myapp.hooks.get_metadata",
    }

See :class:`MoesifUsersMiddleware` for what is recorded and when.
"""

from __future__ import annotations

from moesif_users_middleware.django.middleware import MoesifUsersMiddleware

__all__ = ["MoesifUsersMiddleware"]
