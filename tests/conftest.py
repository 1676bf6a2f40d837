"""Fixtures shared by the whole suite: people, signed-in clients, captured events, mail and push services."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import Client

from tests import factories
from tests.pushservice import LocalPushService
from tests.services import IN_CI

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI the real services are required: fail at once, never skip."""
    if not IN_CI:
        return
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(f"CI needs {', '.join(missing)} set (PostgreSQL and Redis on 127.0.0.1)")
    import socket
    from urllib.parse import urlsplit

    for name, port in (("DATABASE_URL", 5432), ("REDIS_URL", 6379)):
        parts = urlsplit(os.environ[name])
        try:
            socket.create_connection((parts.hostname or "127.0.0.1", parts.port or port), timeout=3).close()
        except OSError as exc:
            raise pytest.UsageError(f"{name} ({parts.hostname}:{parts.port or port}) is not reachable: {exc}") from None


@pytest.fixture
def org(db: Any) -> Any:
    return factories.organization(slug="acme", name="ACME株式会社")


@pytest.fixture
def other_org(db: Any) -> Any:
    return factories.organization(slug="globex", name="Globex")


@pytest.fixture
def admin(org: Any) -> Any:
    from directory.models import Role

    return factories.person(org, "admin@acme.example", roles=(Role.SYSTEM_ADMIN,))


@pytest.fixture
def employee(org: Any) -> Any:
    return factories.person(org, "taro@acme.example")


def signed_in(user: Any) -> Client:
    client = Client()
    response = client.post(f"/{user.organization.slug}/", {"login_id": user.login_id, "password": factories.PASSWORD})
    assert response.status_code == 302, response.content[:500]
    return client


@pytest.fixture
def admin_client(admin: Any) -> Client:
    return signed_in(admin)


@pytest.fixture
def employee_client(employee: Any) -> Client:
    return signed_in(employee)


@dataclass
class CapturedEvents:
    events: list[Any] = field(default_factory=list)

    def of_type(self, event_type: str) -> list[Any]:
        return [e for e in self.events if e.type == event_type]


@pytest.fixture
def capture_events(monkeypatch: pytest.MonkeyPatch) -> CapturedEvents:
    """Records every event the services publish, at the moment it is relayed after commit."""
    from consumers import publisher

    captured = CapturedEvents()
    real_relay = publisher.relay

    def recording_relay(events: Any) -> None:
        captured.events.extend(events)
        real_relay(events)

    monkeypatch.setattr(publisher, "relay", recording_relay)
    return captured


@pytest.fixture
def push_service() -> Iterator[LocalPushService]:
    from consumers.vapid import vapid_keys

    with LocalPushService(vapid_public_key=vapid_keys().public) as service:
        yield service


@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[Any]
    sessions: list[str]


@pytest.fixture
def smtp_server(settings: Any) -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1; Django's SMTP backend is pointed at it."""
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller

    from tests.services import free_port

    messages: list[Any] = []
    sessions: list[str] = []

    class Handler:
        async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: Any) -> Any:
            sessions.append(hostname)
            session.host_name = hostname
            return responses

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
            msg.envelope_to = list(envelope.rcpt_tos)  # type: ignore[attr-defined]
            messages.append(msg)
            return "250 Message accepted"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    try:
        yield SmtpServer("127.0.0.1", port, messages, sessions)
    finally:
        controller.stop()
