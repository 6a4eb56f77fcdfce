"""URL routes of the example API."""

from __future__ import annotations

from accounts import views
from django.urls import path

urlpatterns = [
    path("health", views.health),
    path("api/login", views.login),
    path("api/me", views.me),
    path("api/company", views.company),
    path("session/login", views.session_login),
    path("session/me", views.session_me),
]
