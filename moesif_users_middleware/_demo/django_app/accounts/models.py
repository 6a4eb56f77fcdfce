"""A company and the profile linking each user to it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class Company(models.Model):
    slug: models.SlugField[str, str] = models.SlugField(unique=True)
    name: models.CharField[str, str] = models.CharField(max_length=200)
    plan: models.CharField[str, str] = models.CharField(max_length=40, default="free")

    def __str__(self) -> str:
        return str(self.name)


class Profile(models.Model):
    user: models.OneToOneField[Any, Any] = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    company: models.ForeignKey[Company, Company] = models.ForeignKey(
        Company, on_delete=models.CASCADE, related_name="members"
    )
    title: models.CharField[str, str] = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.user} at {self.company}"
