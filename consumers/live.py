"""The live connection: one WebSocket per open page, carrying any number of streams.

Transport only. Who may read a stream, what a snapshot holds and what was missed all come from the same
helpers and selectors the REST API uses.

Client frames:  {"type": "subscribe", "stream": "org.5", "last_seq": 12 | null}
                {"type": "unsubscribe", "stream": "org.5"}   {"type": "ping"}
Server frames:  {"type": "event", "stream", "seq", "event", "data"}   {"type": "snapshot", "stream", "seq", "data"}
                {"type": "subscribed", "stream", "seq"}   {"type": "pong"}   {"type": "error", "code", "message"}
Close codes:    4401 not signed in, 4403 must choose a password first, 4404 no such organisation for this person.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import transaction
from django.http import Http404

from consumers.hub import hub_for
from consumers.models import Stream
from consumers.publisher import events_since, wire_frame
from consumers.streams import needs_recheck, revoked_user_ids, stream_access
from consumers.wire import raw_writer
from directory.models import User
from directory.selectors import user_in_organization

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_PASSWORD_CHANGE = 4403
CLOSE_RETRY = 1011
MAX_STREAMS_PER_SOCKET = 100

logger = logging.getLogger(__name__)


def _snapshot(user: User, stream: str) -> dict[str, Any]:
    group, kind = stream_access(user, stream)
    Stream.objects.get_or_create(key=group)
    with transaction.atomic():
        # Lock the counter so no writer to this stream commits between reading the seq and the data.
        seq = Stream.objects.select_for_update().filter(key=group).values_list("last_seq", flat=True).get()
        data = kind.snapshot(user, stream.split(".", 1)[1])
    return {"type": "snapshot", "stream": group, "seq": seq, "data": data}


def _current_user(user_id: int) -> User | None:
    """The person as the directory has them now: talk switched off, a new department or deactivation since
    the socket opened must count for the next subscription."""
    return User.objects.filter(id=user_id, is_active=True).select_related("organization", "department").first()


def _refused(user_id: int, streams: Sequence[str]) -> list[str] | None:
    """The streams the person may no longer read; None when they are no longer an active person."""
    user = _current_user(user_id)
    if user is None:
        return None
    refused = []
    for stream in streams:
        try:
            stream_access(user, stream)
        except Http404:
            refused.append(stream)
    return refused


def _catch_up(user: User, stream: str, last_seq: int) -> list[tuple[str, list[int]]] | dict[str, Any]:
    """Frames for the events after last_seq, each with the people it revokes, or a snapshot when they are no
    longer all held."""
    events = events_since(stream, last_seq, limit=settings.EVENT_REPLAY_LIMIT)
    if events is None:
        return _snapshot(user, stream)
    return [
        (
            wire_frame(stream=e.stream, seq=e.seq, event_type=e.type, data=e.data),
            revoked_user_ids(e.stream, e.type, e.data),
        )
        for e in events
    ]


@dataclass
class StreamState:
    # The last sequence number this socket has sent on the stream.
    last: int = 0
    # Frames held back while the socket catches up (subscribe, or a gap being filled); None when live.
    held: list[tuple[int | None, str]] | None = field(default_factory=list)


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Frames reach the socket from the process's hub (consumers/hub.py), not through a channel per socket."""

    user: User
    streams: dict[str, StreamState]

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        if not await database_sync_to_async(user_in_organization)(user, slug):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if user.must_change_password:
            await self.close(code=CLOSE_PASSWORD_CHANGE)  # as REST refuses them until they choose a password
            return
        self.user = user
        self.streams = {}
        self._repairs: set[asyncio.Future[None]] = set()
        self._recheck: asyncio.Future[None] | None = None
        # Under daphne the hub's frames are written straight to the connection (consumers/wire.py).
        self._write = raw_writer(self.base_send)
        self.hub = hub_for(self.channel_layer)
        await self.hub.person_connected(user.id)
        await self.send_json({"type": "hello", "user": user.id})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Channels skips disconnect() when the consumer dies of an exception, as every socket's does when its
            # channel-layer receive fails (Redis restarting). Leave the hub anyway: it would keep the dead socket,
            # the person "online", and the stream's group as joined, so after Redis came back empty no socket of
            # this process would hear the stream again (issue 10, fault 2).
            # Shielded: daphne cancels a dying instance again every second, and a leave cut in half would keep the
            # socket in the hub (and the person "online") for good.
            await asyncio.shield(self.disconnect(1011))

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "hub") or getattr(self, "_left", False):
            return
        self._left = True
        if self._recheck is not None:
            self._recheck.cancel()
        for stream in list(self.streams):
            await self.hub.leave(stream, self)
        self.streams = {}
        await self.hub.person_disconnected(self.user.id)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self._error("bad_frame", "Frames must be JSON text.")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self._error("bad_json", "The frame is not valid JSON.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not hasattr(self, "user"):
            return
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "subscribe":
            await self._subscribe(content.get("stream"), content.get("last_seq"))
        elif kind == "unsubscribe":
            stream = content.get("stream")
            if not isinstance(stream, str):
                await self._error("bad_request", "unsubscribe needs a stream name.")
                return
            await self._drop(stream)
        else:
            await self._error("unknown_type", f"Unknown frame type: {str(kind)[:40]!r}.")

    async def _drop(self, stream: str) -> None:
        if self.streams.pop(stream, None) is not None:
            await self.hub.leave(stream, self)
        await self.send_json({"type": "unsubscribed", "stream": stream})

    async def _subscribe(self, stream: Any, last_seq: Any) -> None:
        if not isinstance(stream, str) or (last_seq is not None and (type(last_seq) is not int or last_seq < 0)):
            await self._error("bad_request", "subscribe needs a stream name and last_seq as a whole number or null.")
            return
        if stream not in self.streams and len(self.streams) >= MAX_STREAMS_PER_SOCKET:
            await self._error("too_many_streams", "Too many streams on one connection.")
            return
        current = await database_sync_to_async(_current_user)(self.user.id)
        if current is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = current
        try:
            await database_sync_to_async(stream_access)(self.user, stream)
        except Http404:
            await self._error("not_found", "No such stream.", stream=stream)
            return
        # Join first and hold what arrives, then catch up: nothing published meanwhile is lost, and the held
        # frames are deduplicated by seq.
        state = StreamState()
        joined = stream in self.streams
        self.streams[stream] = state
        if not joined:
            await self.hub.join(stream, self)
        if last_seq is None:
            frame = await database_sync_to_async(_snapshot)(self.user, stream)
            state.last = frame["seq"]
            await self.send_json(frame)
        else:
            state.last = last_seq
            await self._fill(stream, state)
        await self._release(stream, state)
        if self.streams.get(stream) is state:
            await self.send_json({"type": "subscribed", "stream": stream, "seq": state.last})
        if needs_recheck(stream) and self._recheck is None:
            self._recheck = asyncio.ensure_future(self._recheck_loop())

    async def _recheck_loop(self) -> None:
        """Check again, every STREAM_RECHECK_SECONDS, that the person may still read the streams whose access
        can change without an event (a department manager moved or demoted by the import keeps no board of the
        old subtree). A refused stream is dropped with a not_found error, as at subscribe."""
        while True:
            await asyncio.sleep(settings.STREAM_RECHECK_SECONDS)
            watched = [s for s in self.streams if needs_recheck(s)]
            if not watched:
                continue
            try:
                refused = await database_sync_to_async(_refused)(self.user.id, watched)
            except Exception:
                logger.warning("rechecking stream access failed; trying again later", exc_info=True)
                continue
            if refused is None:
                await self.close(code=CLOSE_UNAUTHENTICATED)
                return
            for stream in refused:
                if stream in self.streams:
                    await self._drop(stream)
                    await self._error("not_found", "No such stream.", stream=stream)

    async def _fill(self, stream: str, state: StreamState, *, revocable: bool = False) -> None:
        """Send what the socket missed after state.last: the held events, or a snapshot. With `revocable`
        (filling a gap in the live stream) an event that removes this person is the last frame sent."""
        result = await database_sync_to_async(_catch_up)(self.user, stream, state.last)
        if self.streams.get(stream) is not state:
            return  # unsubscribed or re-subscribed meanwhile
        if isinstance(result, dict):
            state.last = result["seq"]
            await self.send_json(result)
            return
        for text, revoke in result:
            await self.send(text_data=text)
            state.last += 1
            if revocable and self.user.id in revoke:
                await self._drop(stream)
                return

    async def _release(self, stream: str, state: StreamState, *, revocable: bool = False) -> None:
        """Send the held frames in order, filling any gap, then go live."""
        while state.held:
            held, state.held = state.held, []
            for index, (seq, text) in enumerate(held):
                if self.streams.get(stream) is not state:
                    return
                if seq is None:
                    await self.send(text_data=text)
                elif seq == state.last + 1:
                    state.last = seq
                    await self.send(text_data=text)
                elif seq > state.last + 1:
                    state.held = held[index:] + state.held
                    await self._fill(stream, state, revocable=revocable)
                    break
        state.held = None

    async def hub_deliver(self, stream: str, seq: int | None, text: str, revoke: Sequence[int], frame: bytes) -> None:
        """A frame from the hub: `text` encoded once by the publisher, `frame` its WebSocket bytes."""
        state = self.streams.get(stream)
        if state is None:
            return
        if state.held is not None:
            state.held.append((seq, text))
        elif seq is None or seq == state.last + 1:
            if seq is not None:
                state.last = seq
            if self._write is None or not self._write(frame):
                await self.base_send({"type": "websocket.send", "text": text})
        elif seq > state.last + 1:
            # A gap: hold from here and fetch what is missing, without holding up the hub.
            state.held = [(seq, text)]
            self._repairs.add(task := asyncio.ensure_future(self._repair(stream, state)))
            task.add_done_callback(self._repairs.discard)
        if revoke and self.user.id in revoke:
            await self._drop(stream)  # removed from the room: this was the last frame they get

    async def _repair(self, stream: str, state: StreamState) -> None:
        try:
            await self._fill(stream, state, revocable=True)
            await self._release(stream, state, revocable=True)
        except Exception:
            logger.exception("filling a gap on %s failed; closing so the client resubscribes", stream)
            await self.close(code=CLOSE_RETRY)

    async def _error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, **extra})


class NotFoundConsumer(AsyncJsonWebsocketConsumer):
    """Any other WebSocket path."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
