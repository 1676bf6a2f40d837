"""Reads of talk: who may see a room, its members, pages of history, unread counts and read positions.

`access_room` is the one rule for REST, the WebSocket stream and file downloads: the person uses talk, is in
the room's organisation and is a member (for a department room: is in that department today)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Max, Q, QuerySet
from django.http import Http404

from chat.models import Membership, Message, Room, RoomKind, TalkSettings
from directory.models import Organization, Role, User

PAGE_SIZE = 30


def talk_settings_get(*, organization: Organization) -> TalkSettings:
    settings, _ = TalkSettings.objects.get_or_create(organization=organization)
    return settings


def talk_users(*, organization_id: int) -> QuerySet[User]:
    return User.objects.filter(organization_id=organization_id, is_active=True, talk_available=True)


def is_member(user: Any, room: Room) -> bool:
    if not (user.is_authenticated and user.talk_available and user.is_active):
        return False
    if user.organization_id != room.organization_id:
        return False
    if room.kind == RoomKind.DEPARTMENT:
        return room.department_id is not None and user.department_id == room.department_id
    return Membership.objects.filter(room=room, user=user).exists()


def access_room(user: Any, room_id: int) -> Room:
    """The room, or Http404 for anyone who may not see it (another organisation's, not a member, no talk)."""
    room = Room.objects.filter(id=room_id).select_related("department", "organization").first()
    if room is None or not is_member(user, room):
        raise Http404
    return room


def access_message(user: Any, message_id: int) -> Message:
    message = Message.objects.filter(id=message_id).select_related("room", "sender", "attachment").first()
    if message is None or not is_member(user, message.room):
        raise Http404
    return message


def room_member_ids(*, room: Room) -> list[int]:
    """Everyone who reads the room today (active talk users)."""
    people = talk_users(organization_id=room.organization_id)
    if room.kind == RoomKind.DEPARTMENT:
        people = people.filter(department=room.department) if room.department_id else people.none()
    else:
        people = people.filter(room_memberships__room=room)
    return list(people.values_list("id", flat=True))


def room_members(*, room: Room) -> list[dict[str, Any]]:
    people = talk_users(organization_id=room.organization_id).select_related("department")
    if room.kind == RoomKind.DEPARTMENT:
        people = people.filter(department=room.department) if room.department_id else people.none()
        admins: set[int] = set()
    else:
        people = people.filter(room_memberships__room=room)
        admins = set(Membership.objects.filter(room=room, is_admin=True).values_list("user_id", flat=True))
    return [
        {
            "id": p.id,
            "name": p.display_name,
            "department": p.department.name if p.department else "",
            "is_admin": p.id in admins,
        }
        for p in people
    ]


def room_is_admin(user: Any, room: Room) -> bool:
    if room.kind == RoomKind.DEPARTMENT:
        return False
    return Membership.objects.filter(room=room, user=user, is_admin=True).exists()


def room_can_post(user: Any, room: Room) -> bool:
    return room.members_may_post or room_is_admin(user, room)


def read_positions(*, room: Room) -> dict[int, int]:
    """Each current member's last read message id (0 for none)."""
    members = room_member_ids(room=room)
    read = dict(Membership.objects.filter(room=room, user_id__in=members).values_list("user_id", "last_read_id"))
    return {uid: read.get(uid, 0) for uid in members}


def message_page(*, room: Room, before_id: int | None = None, limit: int = PAGE_SIZE) -> tuple[list[Message], bool]:
    """Up to `limit` messages older than `before_id` (newest page when None), oldest first, and whether
    there are older ones."""
    query = Message.objects.filter(room=room).select_related("sender", "attachment").order_by("-id")
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    rows = list(query[: limit + 1])
    has_more = len(rows) > limit
    return list(reversed(rows[:limit])), has_more


@dataclass(frozen=True)
class RoomSummary:
    room: Room
    name: str
    members_count: int
    unread: int
    last_read_id: int
    last_message: Message | None
    other: User | None  # the other person of a 1:1 room
    is_admin: bool


def rooms_of(user: User) -> QuerySet[Room]:
    if not (user.talk_available and user.is_active):
        return Room.objects.none()
    # A department room's Membership row only keeps a read position: the directory decides who is in it.
    mine = Q(memberships__user=user) & ~Q(kind=RoomKind.DEPARTMENT)
    if user.department_id:
        mine |= Q(kind=RoomKind.DEPARTMENT, department_id=user.department_id)
    return Room.objects.filter(mine, organization_id=user.organization_id).distinct()


def room_summaries(*, user: User, room_ids: Sequence[int] | None = None) -> list[RoomSummary]:
    """The person's rooms, most recent activity first, each with its unread count and last message."""
    rooms = rooms_of(user).select_related("department")
    if room_ids is not None:
        rooms = rooms.filter(id__in=room_ids)
    room_list = list(rooms)
    if not room_list:
        return []
    ids = [r.id for r in room_list]
    memberships = {m.room_id: m for m in Membership.objects.filter(room_id__in=ids, user=user)}
    last_read = {rid: (memberships[rid].last_read_id if rid in memberships else 0) for rid in ids}
    unread_filter = Q()
    for rid in ids:
        unread_filter |= Q(room_id=rid, id__gt=last_read[rid])
    unread = dict(
        Message.objects.filter(unread_filter, deleted_at__isnull=True)
        .exclude(sender=user)
        .values("room_id")
        .annotate(n=Count("id"))
        .values_list("room_id", "n")
    )
    last_ids = dict(
        Message.objects.filter(room_id__in=ids).values("room_id").annotate(m=Max("id")).values_list("room_id", "m")
    )
    last_messages = {
        m.room_id: m for m in Message.objects.filter(id__in=last_ids.values()).select_related("sender", "attachment")
    }
    counts = _member_counts(room_list)
    others = _direct_others(user, [r for r in room_list if r.kind == RoomKind.DIRECT])
    summaries = [
        RoomSummary(
            room=r,
            name=room_display_name(r, viewer=user, other=others.get(r.id)),
            members_count=counts.get(r.id, 0),
            unread=unread.get(r.id, 0),
            last_read_id=last_read[r.id],
            last_message=last_messages.get(r.id),
            other=others.get(r.id),
            is_admin=bool(memberships.get(r.id) and memberships[r.id].is_admin),
        )
        for r in room_list
    ]
    summaries.sort(key=lambda s: (s.last_message.id if s.last_message else 0, s.room.id), reverse=True)
    return summaries


def _member_counts(rooms: Iterable[Room]) -> dict[int, int]:
    rooms = list(rooms)
    counts: dict[int, int] = {}
    membership_rooms = [r.id for r in rooms if r.kind != RoomKind.DEPARTMENT]
    if membership_rooms:
        counts.update(
            Membership.objects.filter(room_id__in=membership_rooms, user__is_active=True, user__talk_available=True)
            .values("room_id")
            .annotate(n=Count("id"))
            .values_list("room_id", "n")
        )
    for r in rooms:
        if r.kind == RoomKind.DEPARTMENT:
            people = talk_users(organization_id=r.organization_id)
            counts[r.id] = people.filter(department=r.department).count() if r.department_id else 0
    return counts


def _direct_others(user: User, rooms: Sequence[Room]) -> dict[int, User]:
    if not rooms:
        return {}
    rows = Membership.objects.filter(room__in=rooms).exclude(user=user).select_related("user")
    return {m.room_id: m.user for m in rows}


def room_display_name(room: Room, *, viewer: User, other: User | None = None) -> str:
    if room.kind == RoomKind.DEPARTMENT and room.department is not None:
        return room.department.name
    if room.kind == RoomKind.DIRECT:
        if other is None:
            other = _direct_others(viewer, [room]).get(room.id)
        return other.display_name if other else room.name
    return room.name


def may_download_talk_logs(user: Any) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    if user.has_role(Role.ADMIN_GOTALK):
        return True
    return TalkSettings.objects.filter(organization_id=user.organization_id, log_downloaders=user).exists()


def access_attachment(user: Any, attachment_id: int) -> Any:
    from chat.models import Attachment

    attachment = Attachment.objects.filter(id=attachment_id).select_related("room").first()
    if attachment is None or not is_member(user, attachment.room):
        raise Http404
    if Message.objects.filter(attachment=attachment, deleted_at__isnull=False).exists():
        raise Http404
    return attachment
