"""Issue 10, fault 3: a process that dies after its commit and before it publishes loses no event.

A real second process (Django, PostgreSQL, the Redis channel layer) writes an outbox event in a transaction,
commits, and is killed inside the after-commit relay, before the frame reaches the channel layer. The beat relay
(`consumers.tasks.outbox_relay`) then sends it; a second beat run sends nothing more. A listener on the stream's
group, in this process, counts the frames: exactly one, with the event's sequence number."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from consumers.models import OutboxEvent
from consumers.publisher import relay_pending
from tests.services import ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

GROUP = "resilience.crash"

CHILD = r"""
import os, sys
import django
django.setup()
from django.db import transaction
from consumers import publisher

def die(events):  # the after-commit relay: the process is killed before it sends anything
    os._exit(9)

publisher.relay = die
with transaction.atomic():
    event = publisher.publish_on_commit(sys.argv[1], "resilience.ping", {"n": 1})
    print(event.id, event.seq, flush=True)
print("relay survived", flush=True)  # never reached
"""


def _redis_layer() -> None:
    if "RedisChannelLayer" not in settings.CHANNEL_LAYERS["default"]["BACKEND"]:
        pytest.fail("this test needs the Redis channel layer: set REDIS_URL (CI always does)")


async def _listen(seconds: float, ready: asyncio.Event) -> list[dict[str, Any]]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    ready.set()
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(await asyncio.wait_for(layer.receive(channel), timeout=seconds))
    except TimeoutError:
        return frames
    finally:
        await layer.group_discard(GROUP, channel)


def _beat() -> int:
    """One run of the beat relay, on a worker thread with its own database connection (closed after)."""
    try:
        return relay_pending(older_than=timedelta(0))
    finally:
        connection.close()


def test_an_event_committed_by_a_process_that_died_before_publishing_goes_out_exactly_once() -> None:
    _redis_layer()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, GROUP],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 9, child.stderr[-2000:]
    assert "relay survived" not in child.stdout
    event_id, seq = map(int, child.stdout.split()[:2])
    event = OutboxEvent.objects.get(id=event_id)
    assert event.published_at is None  # committed, never sent

    async def scenario() -> list[dict[str, Any]]:
        ready = asyncio.Event()
        listener = asyncio.ensure_future(_listen(3.0, ready))
        await ready.wait()
        # Two beat runs (the second finds nothing left), from a thread as Celery's would be.
        first = await asyncio.to_thread(_beat)
        second = await asyncio.to_thread(_beat)
        assert (first, second) == (1, 0)
        return await listener

    frames = asyncio.run(scenario())
    mine = [f for f in frames if f.get("stream") == GROUP]
    assert [f["seq"] for f in mine] == [seq]
    assert '"resilience.ping"' in mine[0]["text"]
    event.refresh_from_db()
    assert event.published_at is not None
