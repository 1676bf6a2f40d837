"""Fixtures of the safety-confirmation tests: a department tree, safety users (people with an ANPI_LOGIN_ID),
the roles that register, read and answer incidents, and helpers that subscribe people to the local push
service, send an incident and read what the push service decrypted.

The real parts are PostgreSQL, the local push service (tests/pushservice.py, which verifies VAPID and decrypts)
and aiosmtpd (`smtp_server`). Sends run either directly (`services.dispatch_run`) or through eager Celery
queued on commit, as in production."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from consumers.models import PushSubscription
from consumers.push import subscription_upsert
from directory.models import Department, Organization, Role, User
from safety import services
from safety.models import Dispatch, Incident
from tests import factories
from tests.conftest import signed_in
from tests.pushservice import LocalPushService


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    """Throttle counters (the link answer's rate limit) live in the cache."""
    cache.clear()


@dataclass(frozen=True)
class Tree:
    """本社 (HQ) › 営業部 (sales) › 東日本営業課 (east), and a separate 工場 (plant)."""

    hq: Department
    sales: Department
    east: Department
    plant: Department


@pytest.fixture
def tree(org: Organization) -> Tree:
    hq = factories.department(org, "HQ")
    sales = factories.department(org, "SALES", hq)
    east = factories.department(org, "EAST", sales)
    plant = factories.department(org, "PLANT")
    for sort_order, department in enumerate((hq, sales, east, plant)):
        department.sort_order = sort_order
        department.save(update_fields=["sort_order"])
    return Tree(hq=hq, sales=sales, east=east, plant=plant)


def safety_person(
    org: Organization,
    login_id: str,
    *,
    department: Department | None = None,
    roles: tuple[Role, ...] = (),
    email: str | None = None,
    language: str = "ja",
    region_code: str = "",
    anpi: bool = True,
) -> User:
    """A person who uses the safety confirmation (has an ANPI_LOGIN_ID) unless `anpi` is False."""
    return factories.person(
        org,
        login_id,
        roles=roles,
        department=department,
        email=email,
        language=language,
        region_code=region_code,
        anpi_login_id=f"anpi-{login_id}"[:32] if anpi else None,
    )


@pytest.fixture
def crisis(org: Organization) -> User:
    return factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))


@pytest.fixture
def crisis_client(crisis: User) -> Client:
    return signed_in(crisis)


def incident_make(org: Organization, actor: User | None, **fields: Any) -> Incident:
    fields.setdefault("title", "震度6強の地震が発生しました")
    fields.setdefault("message", "安否を回答してください。\n落ち着いて行動してください。")
    return services.incident_create(organization=org, actor=actor, **fields)


@pytest.fixture
def incident(org: Organization, crisis: User) -> Incident:
    return incident_make(org, crisis)


def subscribe(service: LocalPushService, person: User, *, respond: int = 201) -> PushSubscription:
    """A browser of `person` subscribed at the local push service, registered as the app's API would."""
    info = service.new_subscription(respond=respond)
    return subscription_upsert(
        user=person, endpoint=info["endpoint"], p256dh=info["keys"]["p256dh"], auth=info["keys"]["auth"]
    )


def send(
    incident: Incident, actor: User | None, target: Mapping[str, Any] | None = None, *, run: bool = True
) -> Dispatch:
    """Create a send and (unless `run` is False) run it here, as the Celery task would."""
    dispatch = services.dispatch_create(incident=incident, actor=actor, target=target or {"mode": "everyone"})
    if run:
        services.dispatch_run(dispatch_id=dispatch.id)
    return dispatch


def answer(incident: Incident, person: User, safety: str = "safe", **values: Any) -> Any:
    return services.answer_submit(
        incident_id=incident.id, person=person, values={"safety": safety, **values}, source="app"
    )


def pushes_by_person(service: LocalPushService) -> dict[int, list[dict[str, Any]]]:
    """The decrypted payloads the push service received, by the person whose subscription each went to."""
    owners = {
        subscription.endpoint.removeprefix(service.base_url): subscription.user_id
        for subscription in PushSubscription.objects.all()
    }
    received: dict[int, list[dict[str, Any]]] = {}
    for push in service.received:
        received.setdefault(owners.get(push.path, -1), []).append(json.loads(push.payload))
    return received


def age(dispatch: Dispatch, *, seconds: int = 120) -> None:
    """Make a send look as if its worker stopped reporting `seconds` ago."""
    Dispatch.objects.filter(id=dispatch.id).update(
        heartbeat_at=timezone.now() - timedelta(seconds=seconds),
        created_at=timezone.now() - timedelta(seconds=seconds),
    )


def mail_recipients(messages: Sequence[Any]) -> list[str]:
    return sorted(address for message in messages for address in message.envelope_to)
