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

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import transaction
from django.http import Http404

from consumers.models import Stream
from consumers.publisher import events_since, wire_frame
from consumers.streams import stream_access
from directory.models import User
from directory.selectors import user_in_organization

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_PASSWORD_CHANGE = 4403
MAX_STREAMS_PER_SOCKET = 50


def _snapshot(user: User, stream: str) -> dict[str, Any]:
    group, kind = stream_access(user, stream)
    Stream.objects.get_or_create(key=group)
    with transaction.atomic():
        # Lock the counter so no writer to this stream commits between reading the seq and the data.
        seq = Stream.objects.select_for_update().filter(key=group).values_list("last_seq", flat=True).get()
        data = kind.snapshot(user, stream.split(".", 1)[1])
    return {"type": "snapshot", "stream": group, "seq": seq, "data": data}


def _catch_up(user: User, stream: str, last_seq: int) -> list[str] | dict[str, Any]:
    """Frames for the events after last_seq, or a snapshot when they are no longer all held."""
    events = events_since(stream, last_seq, limit=settings.EVENT_REPLAY_LIMIT)
    if events is None:
        return _snapshot(user, stream)
    return [wire_frame(stream=e.stream, seq=e.seq, event_type=e.type, data=e.data) for e in events]


class LiveConsumer(AsyncJsonWebsocketConsumer):
    user: User
    # stream -> last sequence number this socket has sent
    streams: dict[str, int]

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
        await self.send_json({"type": "hello", "user": user.id})

    async def disconnect(self, code: int) -> None:
        for stream in list(getattr(self, "streams", {})):
            await self.channel_layer.group_discard(stream, self.channel_name)

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
            if stream in self.streams:
                del self.streams[stream]
                await self.channel_layer.group_discard(stream, self.channel_name)
            await self.send_json({"type": "unsubscribed", "stream": stream})
        else:
            await self._error("unknown_type", f"Unknown frame type: {str(kind)[:40]!r}.")

    async def _subscribe(self, stream: Any, last_seq: Any) -> None:
        if not isinstance(stream, str) or (last_seq is not None and (type(last_seq) is not int or last_seq < 0)):
            await self._error("bad_request", "subscribe needs a stream name and last_seq as a whole number or null.")
            return
        if stream not in self.streams and len(self.streams) >= MAX_STREAMS_PER_SOCKET:
            await self._error("too_many_streams", "Too many streams on one connection.")
            return
        try:
            await database_sync_to_async(stream_access)(self.user, stream)
        except Http404:
            await self._error("not_found", "No such stream.", stream=stream)
            return
        # Join first, then catch up: anything published meanwhile queues behind us and is deduplicated by seq.
        await self.channel_layer.group_add(stream, self.channel_name)
        self.streams.setdefault(stream, 0)
        if last_seq is None:
            await self._send_snapshot(stream)
        else:
            self.streams[stream] = last_seq
            await self._fill(stream, last_seq)
        await self.send_json({"type": "subscribed", "stream": stream, "seq": self.streams[stream]})

    async def _send_snapshot(self, stream: str) -> None:
        frame = await database_sync_to_async(_snapshot)(self.user, stream)
        self.streams[stream] = frame["seq"]
        await self.send_json(frame)

    async def _fill(self, stream: str, last_seq: int) -> None:
        result = await database_sync_to_async(_catch_up)(self.user, stream, last_seq)
        if isinstance(result, dict):
            self.streams[stream] = result["seq"]
            await self.send_json(result)
            return
        for text in result:
            await self.send(text_data=text)
        self.streams[stream] = last_seq + len(result)

    async def stream_event(self, message: dict[str, Any]) -> None:
        """An event from the channel layer; its frame was encoded once by the publisher."""
        stream, seq = message["stream"], message["seq"]
        if stream not in self.streams:
            return
        if seq is None:  # ephemeral
            await self.send(text_data=message["text"])
            return
        last = self.streams[stream]
        if seq <= last:
            return  # already sent (a second relay, or caught up from the outbox)
        if seq > last + 1:
            await self._fill(stream, last)  # a gap: fetch what we missed, which includes this one
            return
        self.streams[stream] = seq
        await self.send(text_data=message["text"])

    async def _error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, **extra})


class NotFoundConsumer(AsyncJsonWebsocketConsumer):
    """Any other WebSocket path."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
