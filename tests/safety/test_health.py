"""`manage.py health`: each check against the real database and Redis, and the exit code a monitor alerts on."""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from consumers.models import OutboxEvent
from directory.models import Organization, User
from safety import tasks
from safety.health import FAIL, OK, WARN, Check, health_report, worst
from safety.models import JmaFeed
from tests import factories
from tests.conftest import signed_in
from tests.safety.conftest import age, incident_make, safety_person, send
from tests.services import free_port, require_redis

pytestmark = pytest.mark.django_db

FEED = "https://www.data.jma.go.jp/developer/xml/feed/eqvol.xml"


@pytest.fixture(autouse=True)
def quiet_system(settings: Any) -> None:
    """A healthy system: Redis is the cache, beat ran a moment ago, no feed configured unless a test sets one."""
    settings.CACHES = {
        "default": {"BACKEND": "config.cache.RedisCache", "LOCATION": require_redis(), "KEY_PREFIX": "health-test"}
    }
    settings.JMA_FEED_URLS = []
    for task in ("safety_scan", "outbox_relay"):
        cache.set(f"health:beat:{task}", time.time(), None)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def run_command(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("health", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_a_healthy_system_is_all_ok_and_the_command_exits_0() -> None:
    checks = health_report()
    assert worst(checks) == OK, [c for c in checks if c.status != OK]
    names = set(by_name(checks))
    assert {
        "database",
        "outbox",
        "sends",
        "automatic dispatch",
        "push",
        "beat safety_scan",
        "beat outbox_relay",
    } <= names
    assert any(name.startswith("redis ") for name in names)
    code, out = run_command()
    assert code == 0
    assert out.strip().endswith("overall: ok")
    code, out = run_command("--json")
    assert json.loads(out)["status"] == "ok"


def test_the_scan_task_stamps_its_run() -> None:
    cache.delete("health:beat:safety_scan")
    assert by_name(health_report())["beat safety_scan"].status == FAIL
    tasks.safety_scan()
    check = by_name(health_report())["beat safety_scan"]
    assert check.status == OK
    assert check.value is not None and check.value < 5


def test_a_stopped_beat_fails_and_the_command_exits_1() -> None:
    cache.set("health:beat:outbox_relay", time.time() - 600, None)
    check = by_name(health_report())["beat outbox_relay"]
    assert check.status == FAIL
    assert "is beat running" in check.detail
    code, out = run_command()
    assert code == 1
    assert "FAIL  beat outbox_relay" in out
    assert out.strip().endswith("overall: fail")


def test_an_unpublished_event_warns_then_fails_with_its_age() -> None:
    event = OutboxEvent.objects.create(stream="org:1", seq=1, type="x", data={})
    assert by_name(health_report())["outbox"].status == OK  # just written: the relay has its chance first
    OutboxEvent.objects.filter(id=event.id).update(created_at=timezone.now() - timedelta(seconds=60))
    check = by_name(health_report())["outbox"]
    assert (check.status, check.value) == (WARN, 1)
    OutboxEvent.objects.filter(id=event.id).update(created_at=timezone.now() - timedelta(seconds=900))
    assert by_name(health_report())["outbox"].status == FAIL
    OutboxEvent.objects.filter(id=event.id).update(published_at=timezone.now())
    assert by_name(health_report())["outbox"].status == OK


def test_a_send_without_a_worker_fails(org: Organization, crisis: User, settings: Any) -> None:
    safety_person(org, "hanako", email="hanako@example.com")
    incident = incident_make(org, crisis)
    dispatch = send(incident, crisis, run=False)
    assert by_name(health_report())["sends"].status == OK
    age(dispatch, seconds=settings.SAFETY_CLAIM_STALE_SECONDS + 5)
    assert by_name(health_report())["sends"].status == OK  # the scan takes it over first
    age(dispatch, seconds=3 * settings.SAFETY_CLAIM_STALE_SECONDS + settings.SAFETY_SCAN_SECONDS)
    check = by_name(health_report())["sends"]
    assert (check.status, check.value) == (FAIL, 1)
    assert "workers" in check.detail


def test_an_unreachable_redis_fails_without_showing_its_password() -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    checks = health_report(redis_urls=[url])
    failing = [c for c in checks if c.name.startswith("redis ")]
    assert len(failing) == 1
    assert failing[0].status == FAIL
    assert "hunter2secret" not in failing[0].name + failing[0].detail
    assert worst(checks) == FAIL


def test_a_feed_not_polled_fails_and_a_poll_error_warns(settings: Any) -> None:
    settings.JMA_FEED_URLS = [FEED]
    assert by_name(health_report())[f"jma feed {FEED}"].status == WARN  # never polled
    feed = JmaFeed.objects.create(url=FEED, last_polled_at=timezone.now())
    assert by_name(health_report())[f"jma feed {FEED}"].status == OK
    JmaFeed.objects.filter(id=feed.id).update(last_error="HTTP 503")
    check = by_name(health_report())[f"jma feed {FEED}"]
    assert (check.status, "HTTP 503" in check.detail) == (WARN, True)
    JmaFeed.objects.filter(id=feed.id).update(last_polled_at=timezone.now() - timedelta(seconds=3600))
    assert by_name(health_report())[f"jma feed {FEED}"].status == FAIL


def test_without_a_shared_cache_beat_cannot_be_seen_and_says_so(settings: Any) -> None:
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    checks = [c for c in health_report() if c.name.startswith("beat")]
    assert [(c.name, c.status) for c in checks] == [("beat", WARN)]


def test_operators_see_the_checks_in_django_admin_and_nobody_else_does(org: Organization, crisis: User) -> None:
    operator = factories.person(org, "operator")
    operator.is_staff = operator.is_superuser = True
    operator.save(update_fields=["is_staff", "is_superuser"])
    cache.set("health:beat:outbox_relay", time.time() - 600, None)
    browser = signed_in(operator)
    index = browser.get("/admin/")
    assert index.status_code == 200
    assert b'href="/admin/health/"' in index.content
    page = browser.get("/admin/health/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="health-status"' in html and 'class="error"' in html
    assert "beat outbox_relay" in html and "is beat running" in html
    assert "database" in html
    # A staff member who is not a superuser, an organisation administrator and anonymous get nothing.
    staff = factories.person(org, "staff")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    assert signed_in(staff).get("/admin/health/").status_code == 403
    assert b"/admin/health/" not in signed_in(staff).get("/admin/").content
    for client in (signed_in(crisis), signed_in(factories.person(org, "member"))):
        answer = client.get("/admin/health/")
        assert answer.status_code == 302 and "beat" not in answer.content.decode()
    assert Client().get("/admin/health/").status_code == 302
