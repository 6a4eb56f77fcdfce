"""URL routes of the example API."""

from __future__ import annotations

from django.urls import path

from .accounts import views

urlpatterns = [
    path("health", views.health),
    path("api/login", views.login),
    path("api/me", views.me),
    path("api/company", views.company),
    path("session/login", views.session_login),
    path("session/me", views.session_me),
]
