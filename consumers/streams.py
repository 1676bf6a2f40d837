"""Which streams a socket may subscribe to, who may read each, and how to snapshot it.

A stream name is `<kind>.<key>` and is also the channel-layer group name. Each app declares its own
access and snapshot functions in its `events.py`; they are listed here explicitly, not discovered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.http import Http404

from chat import events as chat_events
from consumers.ticker import TickerSpec
from directory import events as directory_events
from directory.models import User
from safety import board as safety_board
from safety import events as safety_events

STREAM_RE = re.compile(r"^([a-z]+)\.([0-9A-Za-z_-]{1,64})$")


@dataclass(frozen=True)
class StreamKind:
    # Returns the group name, or raises Http404 when the person may not read it (same rule as REST).
    access: Callable[[User, str], str]
    snapshot: Callable[[User, str], dict[str, object]]
    # People who lose the stream with an event (removed from a room): their sockets stop following it.
    revokes: Callable[[str, Mapping[str, Any]], list[int]] | None = None
    # Streams of absolute state sent by a coalescing ticker (consumers/ticker.py), not per change.
    ticker: TickerSpec | None = None
    # Access depends on roles and departments that change without an event on the stream (the directory import):
    # each socket checks it again every STREAM_RECHECK_SECONDS and stops following the stream once refused.
    recheck: bool = False


STREAM_KINDS: dict[str, StreamKind] = {
    "org": StreamKind(directory_events.org_stream_access, directory_events.org_stream_snapshot),
    "user": StreamKind(directory_events.user_stream_access, directory_events.user_stream_snapshot),
    "jma": StreamKind(safety_events.jma_stream_access, safety_events.jma_stream_snapshot),
    "room": StreamKind(
        chat_events.room_stream_access, chat_events.room_stream_snapshot, chat_events.room_revoked_user_ids
    ),
    "board": StreamKind(
        safety_board.board_stream_access,
        safety_board.board_stream_snapshot,
        ticker=TickerSpec(
            name="board",
            key=safety_board.board_ticker_key,
            tick=safety_board.board_tick,
            take_dirty=safety_board.board_take_dirty,
            follow=safety_board.board_follow,
        ),
        recheck=True,
    ),
}


def stream_access(user: User, stream: str) -> tuple[str, StreamKind]:
    match = STREAM_RE.match(stream) if isinstance(stream, str) else None
    if not match or match.group(1) not in STREAM_KINDS:
        raise Http404
    kind = STREAM_KINDS[match.group(1)]
    return kind.access(user, match.group(2)), kind


def needs_recheck(stream: str) -> bool:
    kind = STREAM_KINDS.get(stream.split(".", 1)[0])
    return kind is not None and kind.recheck


def ticker_spec(stream: str) -> TickerSpec | None:
    kind = STREAM_KINDS.get(stream.split(".", 1)[0])
    return kind.ticker if kind is not None else None


def default_streams(user: User) -> list[str]:
    """The streams every page of the PWA follows."""
    return [directory_events.user_group(user.id), directory_events.org_group(user.organization_id)]


def revoked_user_ids(stream: str, event_type: str, data: Mapping[str, Any]) -> list[int]:
    kind = STREAM_KINDS.get(stream.split(".", 1)[0])
    if kind is None or kind.revokes is None:
        return []
    return kind.revokes(event_type, data)
