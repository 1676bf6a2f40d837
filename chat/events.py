"""Event streams and event types owned by talk.

`room.<id>`: one room. Durable (seq, held in the outbox for catch-up): `message.posted`, `message.edited`,
`message.deleted` (each carries the whole message as it now is), `room.updated` (name, members).
Ephemeral (no seq): `room.typing`, `room.read` (a member's read position, for receipts).

`user.<id>` (the directory's per-person stream) also carries `talk.room_added` and `talk.room_removed`, so a
person's room list follows rooms they were added to or removed from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from django.http import Http404

from chat.models import Message
from directory.models import User

MESSAGE_POSTED: Literal["message.posted"] = "message.posted"
MESSAGE_EDITED: Literal["message.edited"] = "message.edited"
MESSAGE_DELETED: Literal["message.deleted"] = "message.deleted"
ROOM_UPDATED: Literal["room.updated"] = "room.updated"
ROOM_TYPING: Literal["room.typing"] = "room.typing"
ROOM_READ: Literal["room.read"] = "room.read"
ROOM_ADDED: Literal["talk.room_added"] = "talk.room_added"
ROOM_REMOVED: Literal["talk.room_removed"] = "talk.room_removed"


class PersonRef(TypedDict):
    id: int
    name: str


class AttachmentData(TypedDict):
    id: int
    name: str
    size: int
    content_type: str
    is_image: bool
    url: str


class MessageData(TypedDict):
    id: int
    room: int
    sender: PersonRef | None
    body: str
    attachment: AttachmentData | None
    client_id: str | None
    created_at: str
    edited_at: str | None
    deleted: bool


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


def attachment_url(slug: str, attachment_id: int) -> str:
    return f"/{slug}/api/talk/files/{attachment_id}/"


def message_data(message: Message, *, slug: str) -> MessageData:
    """One shape for REST, the stream and the snapshot. A deleted message keeps only its place."""
    sender = message.sender
    attachment = message.attachment if message.deleted_at is None else None
    return {
        "id": message.id,
        "room": message.room_id,
        "sender": {"id": sender.id, "name": sender.display_name} if sender else None,
        "body": "" if message.deleted_at else message.body,
        "attachment": {
            "id": attachment.id,
            "name": attachment.name,
            "size": attachment.size,
            "content_type": attachment.content_type,
            "is_image": attachment.is_image,
            "url": attachment_url(slug, attachment.id),
        }
        if attachment
        else None,
        "client_id": message.client_id,
        "created_at": message.created_at.isoformat(),
        "edited_at": message.edited_at.isoformat() if message.edited_at else None,
        "deleted": message.deleted_at is not None,
    }


def room_stream_access(user: User, key: str) -> str:
    from chat.selectors import access_room

    if not key.isdigit():
        raise Http404
    return room_group(access_room(user, int(key)).id)


def room_stream_snapshot(user: User, key: str) -> dict[str, object]:
    """The newest page of messages and everyone's read position: what the room view shows on (re)load."""
    from chat.selectors import access_room, message_page, read_positions

    room = access_room(user, int(key))
    messages, has_more = message_page(room=room)
    slug = user.organization.slug
    return {
        "room": room.id,
        "messages": [message_data(m, slug=slug) for m in messages],
        "has_more": has_more,
        "read": {str(uid): pos for uid, pos in read_positions(room=room).items()},
    }


def room_revoked_user_ids(event_type: str, data: Mapping[str, Any]) -> list[int]:
    """People who lose the room with this event: their sockets stop following it at once."""
    if event_type == ROOM_UPDATED:
        return [int(uid) for uid in data.get("removed", [])]
    return []
