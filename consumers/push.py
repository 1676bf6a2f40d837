"""Web push: subscriptions (a person's devices), and sending a notification to people through the batch sender
in webpush.py."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from config.errors import ApplicationError
from consumers.models import PushSubscription
from consumers.vapid import vapid_keyring, vapid_keys, vapid_signing
from consumers.webpush import PushMessage, PushOutcome, PushTarget, send_batch

logger = logging.getLogger(__name__)
# How stale a subscription's last success may be before a successful push notes it again.
SUCCESS_NOTED = timedelta(hours=1)

MAX_SUBSCRIPTIONS_PER_PERSON = 20


def _b64url_ok(value: Any, *, length: int) -> bool:
    import base64

    if not isinstance(value, str) or not value or len(value) > 200:
        return False
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return False
    return len(raw) == length


def _internal_host(hostname: str) -> bool:
    import ipaddress
    import socket

    if hostname == "localhost" or hostname.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(hostname, 443, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        addresses = {hostname}  # unresolvable now: judge the literal (a name is let through)
    for address in addresses:
        try:
            ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        except ValueError:
            continue
        if not ip.is_global:
            return True
    return False


def _endpoint_allowed(endpoint: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    if parts.scheme == "https" and parts.hostname:
        # Our workers POST to this URL: never to this machine or the private network behind it.
        return settings.PUSH_ALLOW_LOOPBACK_HTTP or not _internal_host(parts.hostname)
    # Plain http only to this machine, and only where allowed (tests run a local push service).
    return bool(
        settings.PUSH_ALLOW_LOOPBACK_HTTP and parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
    )


@transaction.atomic
def subscription_upsert(
    *, user: Any, endpoint: str, p256dh: str, auth: str, user_agent: str = "", vapid_public_key: str = ""
) -> PushSubscription:
    """Save this browser's subscription for `user`. A browser that changes hands moves to its new owner.

    `vapid_public_key` is the applicationServerKey the browser subscribed with ("": the current key). It must be
    the current key or an earlier one still kept; a subscription made with a key we no longer hold could never
    be sent to, so it is refused (the browser subscribes again with the current key)."""
    if not isinstance(endpoint, str) or not _endpoint_allowed(endpoint):
        raise ApplicationError("The push endpoint must be an https URL.", code="bad_endpoint")
    if len(endpoint) > 2048:
        raise ApplicationError("The push endpoint is too long.", code="bad_endpoint")
    if not _b64url_ok(p256dh, length=65) or not _b64url_ok(auth, length=16):
        raise ApplicationError("The subscription keys are not valid.", code="bad_keys")
    keyring = vapid_keyring()
    subscribed_with = vapid_public_key.strip().rstrip("=").replace("+", "-").replace("/", "_")
    if subscribed_with and not keyring.knows(subscribed_with):
        raise ApplicationError(
            _("This browser subscribed with a key that is no longer in use. Turn notifications on again."),
            code="vapid_key_unknown",
        )
    if PushSubscription.objects.filter(user=user).exclude(endpoint=endpoint).count() >= MAX_SUBSCRIPTIONS_PER_PERSON:
        raise ApplicationError("Too many devices subscribed; remove one first.", code="too_many_devices")
    subscription, _created = PushSubscription.objects.update_or_create(
        endpoint=endpoint,
        defaults={
            "user": user,
            "p256dh": p256dh,
            "auth": auth,
            "user_agent": user_agent[:300],
            "vapid_public_key": subscribed_with or keyring.current.public,
            "failure_count": 0,
            "retry_after": None,
        },
    )
    return subscription


def subscription_delete(*, user: Any, endpoint: str | None = None, subscription_id: int | None = None) -> int:
    """Remove one of `user`'s own subscriptions, by endpoint or id. Returns how many went (0: none of theirs)."""
    query = PushSubscription.objects.filter(user=user)
    if endpoint is not None:
        query = query.filter(endpoint=endpoint)
    elif subscription_id is not None:
        query = query.filter(id=subscription_id)
    else:
        return 0
    deleted, _by_model = query.delete()
    return deleted


def push_send(*, subscription_ids: Sequence[int], notification: dict[str, Any], ttl: int, urgency: str) -> list[int]:
    """Send one notification to these subscriptions now. Returns the ids to retry later: those that
    answered 429, and those still inside an earlier Retry-After window."""
    now = timezone.now()
    candidates = PushSubscription.objects.filter(id__in=subscription_ids)
    subscriptions = list(candidates.filter(Q(retry_after__isnull=True) | Q(retry_after__lte=now)))
    waiting = list(candidates.filter(retry_after__gt=now).values_list("id", flat=True))
    if not subscriptions:
        return waiting
    targets = [
        PushTarget(id=s.id, endpoint=s.endpoint, p256dh=s.p256dh, auth=s.auth, vapid_public_key=s.vapid_public_key)
        for s in subscriptions
    ]
    message = PushMessage(payload=notification, ttl=ttl, urgency=urgency)  # type: ignore[arg-type]
    # Each target is signed with the key it subscribed with.
    outcomes = send_batch(targets, message, **vapid_signing(), concurrency=settings.PUSH_CONCURRENCY)
    return push_outcomes_record(outcomes) + waiting


def push_outcomes_record(outcomes: Sequence[PushOutcome]) -> list[int]:
    """Keep what the push services said on the subscriptions (gone ones deleted). Returns the ids to retry."""
    now = timezone.now()
    ok = [o.target_id for o in outcomes if o.ok]
    gone = [o.target_id for o in outcomes if o.gone]
    retry = [o for o in outcomes if o.status == 429]
    failed = [o.target_id for o in outcomes if not o.ok and not o.gone and o.status != 429]
    if ok:
        # Only the rows whose record changes: a failure count to clear, or a success not noted for an hour. A
        # send to 10,000 people would otherwise rewrite 10,000 healthy subscriptions every time.
        PushSubscription.objects.filter(id__in=ok).filter(
            Q(failure_count__gt=0) | Q(last_success_at__isnull=True) | Q(last_success_at__lt=now - SUCCESS_NOTED)
        ).update(last_success_at=now, failure_count=0)
    if gone:
        # The push service says the browser unsubscribed or the subscription expired.
        PushSubscription.objects.filter(id__in=gone).delete()
    for outcome in retry:
        PushSubscription.objects.filter(id=outcome.target_id).update(
            retry_after=now + timedelta(seconds=outcome.retry_after or 60)
        )
    if failed:
        PushSubscription.objects.filter(id__in=failed).update(last_failure_at=now, failure_count=F("failure_count") + 1)
        for outcome in outcomes:
            if outcome.target_id in failed:
                logger.warning(
                    "push to subscription %s failed: %s %s", outcome.target_id, outcome.status, outcome.error
                )
    return [o.target_id for o in retry]


# --- Devices: a person's subscriptions as the profile page shows them -------------------------------------


@dataclass(frozen=True)
class Device:
    id: int
    name: str  # "Chrome on Android", in the active language
    user_agent: str
    created_at: datetime
    last_success_at: datetime | None
    last_failure_at: datetime | None
    failure_count: int
    failing: bool  # the pushes since the last success (or since it was added) failed
    key_renewal_pending: bool  # made with an earlier VAPID key: the browser renews it on its next visit
    endpoint_hash: str  # lets the page mark "this device" without putting the endpoint in the page


# (marker in the user agent, name), first match wins: the browsers that also say "Chrome" or "Safari" come first.
_BROWSERS: tuple[tuple[str, str], ...] = (
    ("EdgA/", "Edge"),
    ("EdgiOS/", "Edge"),
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("OPiOS/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("FxiOS/", "Firefox"),
    ("Firefox/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
_SYSTEMS: tuple[tuple[str, str], ...] = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("iPod", "iPod"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Windows", "Windows"),
    ("Macintosh", "Mac"),
    ("Mac OS X", "Mac"),
    ("Linux", "Linux"),
)
_APPLE_MOBILE = re.compile(r"\b(iPhone|iPad|iPod)\b")


def device_parts(user_agent: str) -> tuple[str | None, str | None]:
    """(browser, system) named from a user agent, either None when it cannot tell. Pure; no translation."""
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), None)
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), None)
    if browser is None and _APPLE_MOBILE.search(user_agent) and "AppleWebKit/" in user_agent:
        browser = "Safari"  # an app added to the home screen says neither Safari nor Version
    return browser, system


def device_name(user_agent: str) -> str:
    """A name a person recognises their device by ("Chrome on Android"), in the active language."""
    browser, system = device_parts(user_agent)
    if browser and system:
        return _("%(browser)s on %(system)s") % {"browser": browser, "system": system}
    if browser:
        return browser
    if system:
        return _("A browser on %(system)s") % {"system": system}
    return _("Unknown browser")


def endpoint_hash(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()[:32]


def subscription_failing(subscription: PushSubscription) -> bool:
    """Pushes to it have failed since its last success (a success resets the count)."""
    if subscription.failure_count <= 0:
        return False
    last_success, last_failure = subscription.last_success_at, subscription.last_failure_at
    return last_success is None or last_failure is None or last_success < last_failure


def device_of(subscription: PushSubscription, *, current_key: str | None = None) -> Device:
    s = subscription
    current = vapid_keys().public if current_key is None else current_key
    return Device(
        id=s.id,
        name=device_name(s.user_agent),
        user_agent=s.user_agent,
        created_at=s.created_at,
        last_success_at=s.last_success_at,
        last_failure_at=s.last_failure_at,
        failure_count=s.failure_count,
        failing=subscription_failing(s),
        key_renewal_pending=bool(s.vapid_public_key) and s.vapid_public_key != current,
        endpoint_hash=endpoint_hash(s.endpoint),
    )


def device_list(*, user: Any) -> list[Device]:
    """`user`'s subscribed browsers, newest first, as the devices list shows them. One query."""
    current = vapid_keys().public
    rows = PushSubscription.objects.filter(user=user).order_by("-created_at", "-id")
    return [device_of(s, current_key=current) for s in rows]
