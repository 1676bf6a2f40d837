"""Helpers of the talk tests."""

from __future__ import annotations

from typing import Any

from django.test import Client

from directory.models import User
from tests import factories


def talk_person(org: Any, login_id: str | None = None, **kwargs: Any) -> User:
    return factories.person(org, login_id, talk_available=True, **kwargs)


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user, backend="directory.auth.OrganisationLoginBackend")
    return client
