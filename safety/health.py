"""What an operator watches: one read of the database and Redis that says whether the system would send a safety
check right now, and what is behind if not. `manage.py health` prints it (and exits 1 on any failure) for a
monitoring agent; docs/operations.md explains each check and what to do about it.

Every check reads state the system already keeps: the outbox, the sends and their heartbeats, the automatic
dispatch schedule, the JMA feeds, the delivery rows. The beat tasks stamp when they last ran in the shared cache
(`config.cache.beat_stamp`), so a stopped beat or a worker pool that no longer takes tasks shows as an old stamp."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Min, Q
from django.utils import timezone

OK = "ok"
WARN = "warn"
FAIL = "fail"

# The beat tasks that stamp their runs, and how often each runs.
BEAT_TASKS: dict[str, Callable[[], float]] = {
    "safety_scan": lambda: float(settings.SAFETY_SCAN_SECONDS),
    "outbox_relay": lambda: float(str(settings.CELERY_BEAT_SCHEDULE["outbox-relay"]["schedule"])),
}
# A stamp older than this many periods means the task is not running.
BEAT_LATE_PERIODS = 4
# An unpublished outbox event older than this is behind (the relay runs every 5 s; on commit is immediate).
OUTBOX_BEHIND_SECONDS = 30
OUTBOX_FAIL_SECONDS = 300
# Pushes failing in the last hour: above this share of the pushes tried, someone should look.
PUSH_FAILURE_WARN_SHARE = 0.2
PUSH_FAILURE_MIN_TRIED = 20


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def health_report(*, now: datetime | None = None, redis_urls: Iterable[str] | None = None) -> list[Check]:
    now = now or timezone.now()
    checks = [_database()]
    checks += _redis(list(redis_urls) if redis_urls is not None else _redis_urls())
    if checks[0].status != FAIL:
        checks += [_outbox(now), _sends(now), _decisions(now), *_feeds(now), _push_failures(now)]
    checks += _beats()
    return checks


def worst(checks: Iterable[Check]) -> str:
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


def _redis_urls() -> list[str]:
    urls = list(dict.fromkeys([*settings.CHANNEL_REDIS_URLS, settings.CELERY_BROKER_URL]))
    return [u for u in urls if u.split(":", 1)[0] in ("redis", "rediss", "unix")]


def _database() -> Check:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return Check("database", FAIL, f"cannot query the database: {type(exc).__name__}: {exc}".strip())
    ms = (time.monotonic() - started) * 1000
    return Check("database", OK if ms < 500 else WARN, f"SELECT 1 in {ms:.1f} ms", round(ms, 1))


def _redis(urls: list[str]) -> list[Check]:
    import redis

    checks = []
    for url in urls:
        where = _redact(url)
        started = time.monotonic()
        try:
            client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:
            checks.append(Check(f"redis {where}", FAIL, f"no answer to PING: {type(exc).__name__}: {exc}"))
            continue
        ms = (time.monotonic() - started) * 1000
        checks.append(Check(f"redis {where}", OK if ms < 500 else WARN, f"PING in {ms:.1f} ms", round(ms, 1)))
    return checks


def _redact(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def _outbox(now: datetime) -> Check:
    from consumers.models import OutboxEvent

    behind = OutboxEvent.objects.filter(
        published_at__isnull=True, created_at__lt=now - timedelta(seconds=OUTBOX_BEHIND_SECONDS)
    ).aggregate(n=Count("id"), oldest=Min("created_at"))
    n = behind["n"]
    if not n:
        return Check("outbox", OK, "every event is published", 0)
    age = (now - behind["oldest"]).total_seconds()
    status = FAIL if age > OUTBOX_FAIL_SECONDS else WARN
    return Check(
        "outbox",
        status,
        f"{n} events unpublished for over {OUTBOX_BEHIND_SECONDS} s, the oldest {age:.0f} s: is Redis up, is beat"
        " running outbox_relay?",
        n,
    )


def _sends(now: datetime) -> Check:
    from safety.models import Delivery, DeliveryState, Dispatch

    stale = now - timedelta(seconds=2 * settings.SAFETY_CLAIM_STALE_SECONDS + settings.SAFETY_SCAN_SECONDS)
    stalled = (
        Dispatch.objects.filter(finished_at__isnull=True)
        .filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, created_at__lt=stale))
        .count()
    )
    queued = Delivery.objects.filter(state=DeliveryState.QUEUED, dispatch__finished_at__isnull=True).count()
    if stalled:
        return Check(
            "sends",
            FAIL,
            f"{stalled} sends have had no worker for over {(now - stale).total_seconds():.0f} s ({queued} deliveries"
            " queued): are the Celery workers and beat running?",
            stalled,
        )
    return Check("sends", OK, f"no stalled send; {queued} deliveries queued in running sends", 0)


def _decisions(now: datetime) -> Check:
    from safety.models import JmaDecision

    late = now - timedelta(seconds=2 * settings.SAFETY_SCAN_SECONDS + 60)
    overdue = JmaDecision.objects.filter(executed_at__isnull=True, due_at__lt=late).count()
    if overdue:
        return Check(
            "automatic dispatch",
            FAIL,
            f"{overdue} automatic dispatch decisions are past their hold and not executed: is beat running"
            " safety_scan?",
            overdue,
        )
    return Check("automatic dispatch", OK, "no decision overdue", 0)


def _feeds(now: datetime) -> list[Check]:
    from safety.models import JmaFeed

    checks = []
    period = settings.JMA_POLL_SECONDS
    known = {f.url: f for f in JmaFeed.objects.filter(url__in=settings.JMA_FEED_URLS)}
    for url in settings.JMA_FEED_URLS:
        feed = known.get(url)
        name = f"jma feed {url}"
        if feed is None or feed.last_polled_at is None:
            checks.append(Check(name, WARN, "never polled yet"))
            continue
        age = (now - feed.last_polled_at).total_seconds()
        if age > 3 * period + 60:
            checks.append(Check(name, FAIL, f"last polled {age:.0f} s ago (every {period} s expected)", round(age)))
        elif feed.last_error:
            checks.append(Check(name, WARN, f"the last poll failed: {feed.last_error[:200]}", round(age)))
        else:
            checks.append(Check(name, OK, f"polled {age:.0f} s ago", round(age)))
    return checks


def _push_failures(now: datetime) -> Check:
    from safety.models import Channel, Delivery, DeliveryState, Dispatch

    # The pushes of the sends of the last hour (through the dispatch index: no scan of every delivery ever made).
    recent = Dispatch.objects.filter(created_at__gte=now - timedelta(hours=1)).values("id")
    tried = Delivery.objects.filter(dispatch__in=recent, channel=Channel.PUSH).exclude(state=DeliveryState.QUEUED)
    counts = tried.aggregate(n=Count("id"), failed=Count("id", filter=Q(state=DeliveryState.FAILED)))
    n, failed = counts["n"], counts["failed"]
    share = failed / n if n else 0.0
    detail = f"{failed} of {n} pushes of the last hour's sends failed"
    if n >= PUSH_FAILURE_MIN_TRIED and share > PUSH_FAILURE_WARN_SHARE:
        return Check("push", WARN, detail + ": check the VAPID keys and the push services' answers in the log", share)
    return Check("push", OK, detail, round(share, 3))


def _beats() -> list[Check]:
    if "locmem" in settings.CACHES["default"]["BACKEND"].lower():
        return [Check("beat", WARN, "no shared cache (REDIS_URL unset): beat runs cannot be seen from here")]
    checks = []
    for task, period in BEAT_TASKS.items():
        try:
            stamp = cache.get(f"health:beat:{task}")
        except Exception as exc:
            checks.append(Check(f"beat {task}", FAIL, f"cannot read the cache: {type(exc).__name__}"))
            continue
        if stamp is None:
            checks.append(Check(f"beat {task}", FAIL, "has not run since Redis started: is beat running?"))
            continue
        age = time.time() - float(stamp)
        late = BEAT_LATE_PERIODS * period() + 10
        status = FAIL if age > late else OK
        detail = f"ran {age:.0f} s ago (every {period():.0f} s)"
        if status == FAIL:
            detail += ": is beat running, and is a worker taking its tasks?"
        checks.append(Check(f"beat {task}", status, detail, round(age, 1)))
    return checks
