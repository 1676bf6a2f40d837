"""Shared by the talk tests: people who use talk, a client signed in as one of them, and an empty cache
(throttle counters and presence live there)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache

from directory.models import User
from tests.chat.support import talk_person


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    cache.clear()


@pytest.fixture
def alice(org: Any) -> User:
    return talk_person(org, "alice")


@pytest.fixture
def bob(org: Any) -> User:
    return talk_person(org, "bob")


@pytest.fixture
def carol(org: Any) -> User:
    return talk_person(org, "carol")
