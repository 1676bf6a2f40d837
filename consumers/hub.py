"""Process-local fan-out: one channel-layer subscription per stream per web process.

Stock Channels gives every socket its own channel, so an event for a room of 1,000 open sockets costs 1,000
Redis list pushes, 1,000 decodes and 1,000 trips through each consumer's dispatch loop. Here each web process
joins a stream's group once, with the hub's one channel, and hands the frame (encoded once by the publisher)
straight to its local sockets. A frame the layer dropped (a full channel) is found by its sequence number and
fetched from the outbox once per process, not once per socket.

The hub also keeps the presence of the people connected to this process fresh (consumers/presence.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings

from consumers.presence import presence_leave, presence_touch
from consumers.ticker import Ticker
from consumers.wire import text_frame

logger = logging.getLogger(__name__)

# channels-redis forgets group members after group_expiry (a day), and a Redis that restarts empty forgets them at
# once; re-join every minute, so sockets that outlived a quick restart hear their streams again within one.
GROUP_REFRESH_SECONDS = 60


class Subscriber(Protocol):
    async def hub_deliver(
        self, stream: str, seq: int | None, text: str, revoke: Sequence[int], frame: bytes
    ) -> None: ...


def _missed_frames(stream: str, after: int, before: int) -> list[tuple[int, str, list[int]]]:
    from consumers.publisher import events_since, wire_frame
    from consumers.streams import revoked_user_ids

    events = events_since(stream, after, limit=settings.EVENT_REPLAY_LIMIT)
    if events is None:
        return []
    # Each with the people it revokes, as relay() sends it: a removal fetched here must still cut them off.
    return [
        (
            e.seq,
            wire_frame(stream=e.stream, seq=e.seq, event_type=e.type, data=e.data),
            revoked_user_ids(e.stream, e.type, e.data),
        )
        for e in events
        if e.seq < before
    ]


class Hub:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.last_seq: dict[str, int] = {}
        self.people: Counter[int] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._start_lock = asyncio.Lock()
        self._membership_lock = asyncio.Lock()
        # Set when the layer failed: the groups are joined again before the next receive (Redis may be back empty).
        self._rejoin_due = False
        # Tickers of the streams this process's sockets follow: ticker name -> (ticker, its task, its streams).
        self.tickers: dict[str, tuple[Ticker, asyncio.Task[None], set[str]]] = {}
        # Names this process in presence keys.
        self.process = uuid.uuid4().hex[:16]

    # --- lifecycle ------------------------------------------------------------------------------------

    async def _start(self) -> None:
        async with self._start_lock:
            if self._tasks:
                return
            self.channel = await self.layer.new_channel()
            self._tasks = [asyncio.ensure_future(self._receive_loop()), asyncio.ensure_future(self._refresh_loop())]

    def _stop_if_idle(self) -> None:
        if self.subscribers or self.people:
            return
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        self.channel = None
        self.last_seq.clear()

    # --- streams --------------------------------------------------------------------------------------

    async def join(self, stream: str, subscriber: Subscriber) -> None:
        # One membership change at a time: a group_discard of the last socket and a group_add of the next
        # one must reach Redis in that order, or this process would stop hearing the stream.
        async with self._membership_lock:
            await self._start()  # under the lock: a leave that stopped the hub cannot slip in between
            subscribers = self.subscribers.get(stream)
            if subscribers is None:
                # Joined only once the layer has it: a group_add that fails (Redis restarting) must not leave an
                # empty entry that the next socket takes for a joined stream, without its group or its ticker.
                await self.layer.group_add(stream, self.channel)
                subscribers = self.subscribers[stream] = set()
                self._ticker_join(stream)
            subscribers.add(subscriber)

    async def leave(self, stream: str, subscriber: Subscriber) -> None:
        async with self._membership_lock:
            subscribers = self.subscribers.get(stream)
            if subscribers is None:
                return
            subscribers.discard(subscriber)
            if not subscribers:
                del self.subscribers[stream]
                self.last_seq.pop(stream, None)
                await self._ticker_leave(stream)
                channel = self.channel
                if channel is not None:
                    try:
                        await self.layer.group_discard(stream, channel)
                    except Exception:  # the layer being down must not break a disconnect
                        logger.warning("group_discard of %s failed", stream, exc_info=True)
            self._stop_if_idle()

    # --- tickers (consumers/ticker.py) -------------------------------------------------------------------

    def _ticker_join(self, stream: str) -> None:
        from consumers.streams import ticker_spec

        spec = ticker_spec(stream)
        if spec is None:
            return
        key = spec.key(stream)
        name = f"{spec.name}:{key}"
        entry = self.tickers.get(name)
        if entry is None:
            streams = {stream}
            ticker = Ticker(spec, key, layer=self.layer, owner=self.process, streams=streams)
            self.tickers[name] = (ticker, asyncio.ensure_future(ticker.run()), streams)
        else:
            entry[2].add(stream)
            entry[0].follow_due = True  # mark the new stream followed on the next look

    async def _ticker_leave(self, stream: str) -> None:
        for name, (ticker, task, streams) in list(self.tickers.items()):
            if stream not in streams:
                continue
            streams.discard(stream)
            if not streams:
                del self.tickers[name]
                task.cancel()
                await ticker.release()  # another process's boards need not wait for the lease to lapse

    async def _rejoin(self) -> None:
        async with self._membership_lock:
            if self.channel is not None:
                for stream in list(self.subscribers):
                    await self.layer.group_add(stream, self.channel)

    async def _receive_loop(self) -> None:
        while True:
            try:
                if self._rejoin_due:
                    await self._rejoin()
                    self._rejoin_due = False
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub receive failed; retrying")
                self._rejoin_due = True
                await asyncio.sleep(1)
                continue
            try:
                await self.dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub dispatch failed for %s", message.get("stream"))

    async def dispatch(self, message: dict[str, Any]) -> None:
        stream = message.get("stream")
        if not isinstance(stream, str) or stream not in self.subscribers:
            return
        seq = message.get("seq")
        revoke: Sequence[int] = message.get("revoke") or ()
        if seq is not None:
            last = self.last_seq.get(stream)
            if last is not None and seq <= last:
                return  # relayed twice (the beat relay), or already filled from the outbox
            if last is not None and seq > last + 1:
                # The layer dropped something (or another process's relay overtook): fetch it once here.
                for missed_seq, text, missed_revoke in await database_sync_to_async(_missed_frames)(stream, last, seq):
                    await self._deliver(stream, missed_seq, text, missed_revoke)
            self.last_seq[stream] = seq
        await self._deliver(stream, seq, message["text"], revoke)

    async def _deliver(self, stream: str, seq: int | None, text: str, revoke: Sequence[int]) -> None:
        frame = text_frame(text)  # the WebSocket frame, built once for every socket
        for subscriber in list(self.subscribers.get(stream, ())):
            try:
                await subscriber.hub_deliver(stream, seq, text, revoke, frame)
            except Exception:
                logger.exception("delivering %s#%s to a socket failed", stream, seq)

    async def _refresh_loop(self) -> None:
        interval = max(1.0, settings.PRESENCE_TTL_SECONDS / 3)
        since_groups = 0.0
        while True:
            await asyncio.sleep(interval)
            since_groups += interval
            try:
                if self.people:
                    await sync_to_async(presence_touch, thread_sensitive=False)(list(self.people), process=self.process)
                if since_groups >= GROUP_REFRESH_SECONDS and self.channel is not None:
                    since_groups = 0.0
                    for stream in list(self.subscribers):
                        await self.layer.group_add(stream, self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("presence/group refresh failed", exc_info=True)

    # --- presence -------------------------------------------------------------------------------------

    async def person_connected(self, user_id: int) -> None:
        await self._start()
        self.people[user_id] += 1
        if self.people[user_id] == 1:
            await sync_to_async(presence_touch, thread_sensitive=False)([user_id], process=self.process)

    async def person_disconnected(self, user_id: int) -> None:
        if self.people[user_id] <= 1:
            del self.people[user_id]
            try:
                await sync_to_async(presence_leave, thread_sensitive=False)(user_id, process=self.process)
            except Exception:
                logger.warning("presence clear failed", exc_info=True)
        else:
            self.people[user_id] -= 1
        self._stop_if_idle()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub_for(layer: Any) -> Hub:
    """The hub of this event loop (one per web process; tests run a loop each)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None or hub.layer is not layer:
        hub = Hub(layer)
        _hubs[loop] = hub
    return hub
