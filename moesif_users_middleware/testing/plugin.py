"""The pytest plugin: the ``moesif_users`` fixture (registered as the ``moesif_users``
``pytest11`` entry point; it does nothing unless a test uses the fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import Recorder, recording

__all__ = ["moesif_users"]


@pytest.fixture
def moesif_users() -> Iterator[Recorder]:
    """Every Moesif sender of the process records into memory for this test.

    ``moesif_users.users["42"]`` is user 42's merged profile, ``.companies`` the
    companies', ``.batches`` the raw requests; reading them flushes first. See
    :mod:`moesif_users_middleware.testing`.
    """
    with recording() as recorder:
        yield recorder
