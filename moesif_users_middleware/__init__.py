"""Keep Moesif user and company profiles current from Django, Flask, WSGI and ASGI apps."""

from __future__ import annotations

from .errors import ConfigurationError
from .models import Campaign, Company, User, ValidationError
from .sender import Sender, get_sender
from .transport import ApiError, AsyncUsersClient, TransportError, UsersClient

__all__ = [
    "ApiError",
    "AsyncUsersClient",
    "Campaign",
    "Company",
    "ConfigurationError",
    "Sender",
    "TransportError",
    "User",
    "UsersClient",
    "ValidationError",
    "get_sender",
]
__version__ = "0.1.0"
