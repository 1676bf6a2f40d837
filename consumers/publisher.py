"""The one place that publishes events: to channel-layer groups, and to web push where an event asks.

Services call `publish_on_commit(group, event_type, data, push=...)` inside their transaction. The event is
written to the outbox in that same transaction with the stream's next sequence number, so it commits or
rolls back with the change. After commit it is relayed at once; if the process dies first, the
`outbox_relay` beat task relays it. Clients drop a sequence number they have already seen, so a second relay
is harmless, and the push task claims each event once.

Ephemeral events (typing, progress bars) carry no sequence number and are sent at once with `publish_now`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from consumers.models import OutboxEvent, Stream

logger = logging.getLogger(__name__)

Urgency = Literal["very-low", "low", "normal", "high"]


class Notification(TypedDict, total=False):
    title: str
    body: str
    url: str
    tag: str


class PushRequest(TypedDict):
    user_ids: list[int]
    notification: Notification
    ttl: int
    urgency: Urgency


def push_request(
    user_ids: Iterable[int],
    *,
    title: str,
    body: str = "",
    url: str = "",
    tag: str = "",
    ttl: int | None = None,
    urgency: Urgency = "normal",
) -> PushRequest:
    notification: Notification = {"title": title, "body": body, "url": url}
    if tag:
        notification["tag"] = tag
    return {
        "user_ids": sorted(set(user_ids)),
        "notification": notification,
        "ttl": settings.PUSH_DEFAULT_TTL if ttl is None else ttl,
        "urgency": urgency,
    }


def wire_frame(*, stream: str, seq: int, event_type: str, data: Mapping[str, Any]) -> str:
    """The frame a socket receives, encoded once per event rather than once per socket."""
    return json.dumps(
        {"type": "event", "stream": stream, "seq": seq, "event": event_type, "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
    )


class _LayerLoop:
    """One event loop in a background thread for sending to the channel layer from sync code.

    `async_to_sync` outside an event loop (Celery, commands, a sync caller) starts a new loop per call, and
    channels-redis opens a new connection per loop: about 5 ms per event. This loop lives as long as the
    process (a forked worker starts its own), so connections are reused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="channel-layer-send", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop


_layer_loop = _LayerLoop()


def layer_group_send(group: str, message: dict[str, Any]) -> None:
    """group_send from sync code. The in-memory layer (embedded default, tests) is bound to the loop of its
    receivers, so it keeps async_to_sync."""
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        async_to_sync(layer.group_send)(group, message)
        return
    future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _layer_loop.loop())
    future.result(timeout=30)


def _next_seq(group: str) -> int:
    # UPDATE takes the row lock until commit: writers to one stream serialise, so seq follows commit order.
    if not Stream.objects.filter(key=group).update(last_seq=F("last_seq") + 1):
        try:
            with transaction.atomic():
                Stream.objects.create(key=group, last_seq=1)
            return 1
        except IntegrityError:
            Stream.objects.filter(key=group).update(last_seq=F("last_seq") + 1)
    return Stream.objects.filter(key=group).values_list("last_seq", flat=True).get()


def publish_on_commit(
    group: str, event_type: str, data: Mapping[str, Any], *, push: PushRequest | None = None
) -> OutboxEvent:
    """Record an event for `group` in the caller's transaction and relay it after commit."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("publish_on_commit must be called inside transaction.atomic")
    event = OutboxEvent.objects.create(
        stream=group, seq=_next_seq(group), type=event_type, data=dict(data), push=dict(push) if push else None
    )
    # robust: a failing channel layer or broker must not turn the caller's committed write into a 500.
    transaction.on_commit(lambda: relay([event]), robust=True)
    return event


def relay(events: Sequence[OutboxEvent]) -> None:
    """Send committed outbox events to their groups, queue their pushes, and mark them published."""
    from consumers.streams import revoked_user_ids

    for event in events:
        message: dict[str, Any] = {
            "type": "stream.event",
            "stream": event.stream,
            "seq": event.seq,
            "text": wire_frame(stream=event.stream, seq=event.seq, event_type=event.type, data=event.data),
        }
        revoke = revoked_user_ids(event.stream, event.type, event.data)
        if revoke:
            message["revoke"] = revoke
        try:
            layer_group_send(event.stream, message)
        except Exception:
            # The beat relay will try again; clients that reconnect replay from the outbox meanwhile.
            logger.exception("channel layer send failed for %s#%s", event.stream, event.seq)
            continue
        if event.push:
            from consumers.tasks import push_event

            try:
                push_event.delay(event.id)
            except Exception:
                # Left unpublished, so the beat relay queues it again; the push task claims each event once.
                logger.exception("queueing web push failed for %s#%s", event.stream, event.seq)
                continue
        OutboxEvent.objects.filter(id=event.id, published_at__isnull=True).update(published_at=timezone.now())


def relay_pending(*, older_than: timedelta = timedelta(seconds=2), limit: int = 500) -> int:
    """Relay events a dead process committed but never sent. Returns how many were relayed."""
    cutoff = timezone.now() - older_than
    pending = list(OutboxEvent.objects.filter(published_at__isnull=True, created_at__lt=cutoff).order_by("id")[:limit])
    relay(pending)
    return len(pending)


def events_since(group: str, last_seq: int, *, limit: int) -> list[OutboxEvent] | None:
    """The held events after `last_seq`, in order, or None when some are no longer held (send a snapshot)."""
    current = stream_seq(group)
    if last_seq > current:
        return None
    if current - last_seq > limit:
        return None
    events = list(OutboxEvent.objects.filter(stream=group, seq__gt=last_seq, seq__lte=current).order_by("seq"))
    if len(events) != current - last_seq:
        return None
    return events


def held_events_replace(group: str, *, event_types: Sequence[str], data_id: int, data: Mapping[str, Any]) -> int:
    """Give the held events about one object (data["id"]) of `group` its current state, so a client catching up
    never replays what was taken back (a deleted message's text). Call inside the transaction that takes it
    back. Returns how many events were rewritten."""
    return OutboxEvent.objects.filter(stream=group, type__in=list(event_types), data__id=data_id).update(
        data=dict(data)
    )


def stream_seq(group: str) -> int:
    return Stream.objects.filter(key=group).values_list("last_seq", flat=True).first() or 0


def publish_now(group: str, event_type: str, data: Mapping[str, Any]) -> None:
    """Send an ephemeral event (no sequence number, not held) straight away, committed or not."""
    text = json.dumps(
        {"type": "event", "stream": group, "seq": None, "event": event_type, "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    layer_group_send(group, {"type": "stream.event", "stream": group, "seq": None, "text": text})
