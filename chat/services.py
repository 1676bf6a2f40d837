"""Writes of talk. Each is one transaction that publishes its events after commit (consumers.publisher).

Messages post under a lock on the room row, so message ids in a room follow commit order: a read position
("read up to id N") can never skip a message that commits later with a smaller id."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from chat import events
from chat.models import Attachment, FilePolicy, Membership, Message, Room, RoomKind, TalkSettings
from chat.selectors import (
    is_member,
    room_can_post,
    room_is_admin,
    room_member_ids,
    talk_settings_get,
    talk_users,
)
from config.errors import ApplicationError
from consumers.presence import online_user_ids
from consumers.publisher import held_events_replace, publish_now, publish_on_commit, push_request
from directory.events import user_group
from directory.models import Department, Organization, Role, User

MAX_BODY = 4000
MAX_GROUP_MEMBERS = 5000
EDIT_WINDOW = timedelta(days=7)


# --- settings and access --------------------------------------------------------------------------------


@transaction.atomic
def talk_settings_update(
    *,
    organization: Organization,
    file_policy: str | None = None,
    retention_days: int | None = None,
    clear_retention: bool = False,
) -> TalkSettings:
    settings_row = talk_settings_get(organization=organization)
    settings_row = TalkSettings.objects.select_for_update().get(id=settings_row.id)
    if file_policy is not None:
        if file_policy not in FilePolicy.values:
            raise ApplicationError(_("Unknown file policy."), code="bad_file_policy")
        settings_row.file_policy = file_policy
    if clear_retention:
        settings_row.retention_days = None
    elif retention_days is not None:
        if not 1 <= retention_days <= 3650:
            raise ApplicationError(_("Keep messages for 1 to 3650 days."), code="bad_retention")
        settings_row.retention_days = retention_days
    settings_row.save()
    return settings_row


@transaction.atomic
def talk_access_set(*, person: User, talk_available: bool | None = None, may_download_logs: bool | None = None) -> User:
    """Switch talk on or off for one person, and the right to download talk logs (talk administrators)."""
    person = User.objects.select_for_update().get(id=person.id)
    organization = Organization.objects.select_for_update().get(id=person.organization_id)
    if talk_available is not None and talk_available != person.talk_available:
        if talk_available and person.is_active:
            used = talk_users(organization_id=organization.id).count()
            if used >= organization.max_talk_users:
                raise ApplicationError(
                    _("The licence allows %(limit)d talk users; switch someone off first.")
                    % {"limit": organization.max_talk_users},
                    code="licence_exceeded",
                )
        person.talk_available = talk_available
        person.save(update_fields=["talk_available"])
    if may_download_logs is not None:
        settings_row = talk_settings_get(organization=organization)
        if may_download_logs:
            settings_row.log_downloaders.add(person)
        else:
            settings_row.log_downloaders.remove(person)
    return person


# --- rooms ----------------------------------------------------------------------------------------------


def _clean_name(name: str) -> str:
    name = unicodedata.normalize("NFC", str(name or "")).strip()
    if not name:
        raise ApplicationError(_("Give the room a name."), code="name_required")
    if len(name) > 100:
        raise ApplicationError(_("A room name is at most 100 characters."), code="name_too_long")
    return name


def _talk_people(organization_id: int, ids: Sequence[int]) -> list[User]:
    wanted = {int(i) for i in ids}
    people = list(talk_users(organization_id=organization_id).filter(id__in=wanted))
    if len(people) != len(wanted):
        raise ApplicationError(_("Some of these people do not use talk."), code="not_talk_users")
    return people


def department_room_ensure(*, department: Department) -> Room:
    room = Room.objects.filter(kind=RoomKind.DEPARTMENT, department=department).first()
    if room is not None:
        return room
    try:
        with transaction.atomic():
            return Room.objects.create(
                organization_id=department.organization_id, kind=RoomKind.DEPARTMENT, department=department
            )
    except IntegrityError:
        return Room.objects.get(kind=RoomKind.DEPARTMENT, department=department)


def room_direct_open(*, user: User, other: User) -> Room:
    """The 1:1 room of these two people, created the first time either opens it."""
    if other.id == user.id:
        raise ApplicationError(_("Choose someone other than yourself."), code="self_direct")
    _talk_people(user.organization_id, [user.id, other.id])
    low, high = sorted((user.id, other.id))
    key = f"{low}:{high}"
    room = Room.objects.filter(organization_id=user.organization_id, direct_key=key).first()
    if room is not None:
        return room
    try:
        with transaction.atomic():
            room = Room.objects.create(
                organization_id=user.organization_id, kind=RoomKind.DIRECT, direct_key=key, created_by=user
            )
            Membership.objects.bulk_create([Membership(room=room, user_id=uid) for uid in (low, high)])
            _announce_room(room, [other.id])
    except IntegrityError:
        room = Room.objects.get(organization_id=user.organization_id, direct_key=key)
    return room


def _room_create(*, creator: User, name: str, member_ids: Sequence[int], kind: RoomKind) -> Room:
    name = _clean_name(name)
    ids = {int(i) for i in member_ids} | {creator.id}
    if len(ids) > MAX_GROUP_MEMBERS:
        raise ApplicationError(
            _("A group room holds at most %(n)d people.") % {"n": MAX_GROUP_MEMBERS}, code="too_many_members"
        )
    _talk_people(creator.organization_id, sorted(ids))
    room = Room.objects.create(organization_id=creator.organization_id, kind=kind, name=name, created_by=creator)
    Membership.objects.bulk_create(
        [Membership(room=room, user_id=uid, is_admin=uid == creator.id) for uid in sorted(ids)]
    )
    _announce_room(room, sorted(ids - {creator.id}))
    return room


@transaction.atomic
def room_group_create(*, creator: User, name: str, member_ids: Sequence[int]) -> Room:
    """A named group room; the creator is its administrator."""
    return _room_create(creator=creator, name=name, member_ids=member_ids, kind=RoomKind.GROUP)


@transaction.atomic
def room_instruction_create(*, creator: User, name: str, member_ids: Sequence[int]) -> Room:
    """An instruction room (対策室): the people chosen to decide what to do in an incident talk here. The creator
    administers it; only its administrators add or remove people."""
    return _room_create(creator=creator, name=name, member_ids=member_ids, kind=RoomKind.INSTRUCTION)


@transaction.atomic
def room_admin_grant(*, room: Room, user: User) -> None:
    """Make `user` an administrator of the room, adding them if they are not a member."""
    _talk_people(room.organization_id, [user.id])
    membership, created = Membership.objects.get_or_create(room=room, user=user, defaults={"is_admin": True})
    if not created and not membership.is_admin:
        Membership.objects.filter(id=membership.id).update(is_admin=True)
    if created:
        _announce_room(room, [user.id])
        _room_updated(room, added=[user.id])


def _announce_room(room: Room, user_ids: Sequence[int]) -> None:
    for uid in user_ids:
        publish_on_commit(user_group(uid), events.ROOM_ADDED, {"room": room.id})


def _room_updated(room: Room, **extra: Any) -> None:
    publish_on_commit(
        events.room_group(room.id),
        events.ROOM_UPDATED,
        {"room": room.id, "name": room.name, "members_count": len(room_member_ids(room=room)), **extra},
    )


def _lock_room(room: Room) -> Room:
    return Room.objects.select_for_update().get(id=room.id)


MANAGED_KINDS = (RoomKind.GROUP, RoomKind.INSTRUCTION)


def _require_group_admin(actor: User, room: Room) -> None:
    if room.kind not in MANAGED_KINDS:
        raise ApplicationError(_("Only group rooms can be changed."), code="not_group", status=403)
    if not room_is_admin(actor, room):
        raise ApplicationError(_("Only the room's administrators can do this."), code="not_room_admin", status=403)


@transaction.atomic
def room_rename(*, actor: User, room: Room, name: str) -> Room:
    room = _lock_room(room)
    _require_group_admin(actor, room)
    room.name = _clean_name(name)
    room.save(update_fields=["name"])
    _room_updated(room)
    return room


@transaction.atomic
def room_members_add(*, actor: User, room: Room, member_ids: Sequence[int]) -> Room:
    """Any member of a group room may add people to it; to an instruction room, its administrators."""
    room = _lock_room(room)
    if room.kind == RoomKind.INSTRUCTION:
        _require_group_admin(actor, room)
    elif room.kind != RoomKind.GROUP:
        raise ApplicationError(_("Only group rooms can be changed."), code="not_group", status=403)
    existing = set(Membership.objects.filter(room=room).values_list("user_id", flat=True))
    new = sorted({int(i) for i in member_ids} - existing)
    if not new:
        return room
    if len(existing) + len(new) > MAX_GROUP_MEMBERS:
        raise ApplicationError(
            _("A group room holds at most %(n)d people.") % {"n": MAX_GROUP_MEMBERS}, code="too_many_members"
        )
    _talk_people(room.organization_id, new)
    Membership.objects.bulk_create([Membership(room=room, user_id=uid) for uid in new])
    _announce_room(room, new)
    _room_updated(room, added=new)
    return room


@transaction.atomic
def room_member_remove(*, actor: User, room: Room, member: User) -> Room:
    """Leave a group or instruction room, or (room administrators) remove someone from it."""
    room = _lock_room(room)
    if room.kind not in MANAGED_KINDS:
        raise ApplicationError(_("Only group rooms can be changed."), code="not_group", status=403)
    if member.id != actor.id and not room_is_admin(actor, room):
        raise ApplicationError(_("Only the room's administrators can do this."), code="not_room_admin", status=403)
    deleted, _rows = Membership.objects.filter(room=room, user=member).delete()
    if not deleted:
        return room
    remaining = Membership.objects.filter(room=room)
    if room.kind == RoomKind.INSTRUCTION:
        # Only people who manage incidents administer an instruction room; with none left, one of them takes it
        # over by opening it from the board again (safety.services.instruction_room_open).
        remaining = remaining.filter(
            user__role_assignments__role__in=[Role.CRISIS_MANAGER, Role.ADMIN_ANPI], user__is_active=True
        )
    if remaining.exists() and not remaining.filter(is_admin=True).exists():
        # The last administrator left: the longest-standing member takes over.
        first = remaining.order_by("joined_at", "id").first()
        if first is not None:
            Membership.objects.filter(id=first.id).update(is_admin=True)
    publish_on_commit(user_group(member.id), events.ROOM_REMOVED, {"room": room.id})
    _room_updated(room, removed=[member.id])
    return room


# --- messages -------------------------------------------------------------------------------------------


def _clean_body(body: str) -> str:
    body = unicodedata.normalize("NFC", str(body or "")).replace("\r\n", "\n").replace("\r", "\n").rstrip()
    if len(body) > MAX_BODY:
        raise ApplicationError(_("A message is at most %(n)d characters.") % {"n": MAX_BODY}, code="message_too_long")
    return body


@dataclass(frozen=True)
class _StoredFile:
    name: str
    stored_name: str
    sha256: str
    size: int
    content_type: str
    is_image: bool


def _store_upload(room: Room, upload: UploadedFile[bytes]) -> _StoredFile:
    """Check the file against the organisation's policy and write it, before any lock is taken."""
    from chat.files import file_store, upload_check

    policy = talk_settings_get(organization=room.organization).file_policy
    # At most one byte more than the limit is read: enough for upload_check to refuse an oversized file.
    data = upload.read(settings.TALK_FILE_MAX_BYTES + 1)
    verdict = upload_check(filename=upload.name or "", data=data, policy=policy, max_bytes=settings.TALK_FILE_MAX_BYTES)
    stored_name, sha256 = file_store(data)
    return _StoredFile(
        name=(upload.name or "file")[:255],
        stored_name=stored_name,
        sha256=sha256,
        size=len(data),
        content_type=verdict.content_type,
        is_image=verdict.is_image,
    )


def _first_line(message: Message) -> str:
    if message.body:
        line = message.body.strip().split("\n", 1)[0]
        return line if len(line) <= 100 else line[:99] + "…"
    if message.attachment is not None:
        return f"📎 {message.attachment.name}"
    return ""


def message_send(
    *,
    room: Room,
    sender: User,
    body: str,
    client_id: str | None = None,
    upload: UploadedFile[bytes] | None = None,
) -> Message:
    """Post a message (and its file) to a room. Members online get it over their socket; those who are not
    connected get a web push with the sender and the first line. A retry with the same client_id returns
    the message the first attempt posted."""
    if not is_member(sender, room):
        raise ApplicationError(_("You are not a member of this room."), code="not_member", status=403)
    if not room_can_post(sender, room):
        raise ApplicationError(_("Only the room's administrators post here."), code="read_only_room", status=403)
    body = _clean_body(body)
    if client_id is not None:
        client_id = str(client_id)[:64] or None
        earlier = Message.objects.filter(room=room, sender=sender, client_id=client_id).first() if client_id else None
        if earlier is not None:
            return earlier
    if not body and upload is None:
        raise ApplicationError(_("Write a message or attach a file."), code="empty_message")
    # File I/O and the presence lookup happen before the transaction: the room's row lock is held only
    # for the inserts, and the transaction stays short (the talk-log archive relies on that).
    stored = _store_upload(room, upload) if upload is not None else None
    try:
        offline = _offline_members(room, sender)
        with transaction.atomic():
            locked = _lock_room(room)
            attachment = (
                Attachment.objects.create(
                    organization_id=room.organization_id,
                    room=locked,
                    uploader=sender,
                    name=stored.name,
                    stored_name=stored.stored_name,
                    size=stored.size,
                    content_type=stored.content_type,
                    is_image=stored.is_image,
                    sha256=stored.sha256,
                )
                if stored
                else None
            )
            message = Message.objects.create(
                room=locked, sender=sender, body=body, attachment=attachment, client_id=client_id
            )
            locked.last_message_at = message.created_at
            locked.save(update_fields=["last_message_at"])
            Membership.objects.filter(room=locked, user=sender).update(last_read_id=message.id)
            _publish_message(locked, message, events.MESSAGE_POSTED, notify=offline)
    except IntegrityError:
        _forget_file(stored.stored_name if stored else None)
        if client_id:
            earlier = Message.objects.filter(room=room, sender=sender, client_id=client_id).first()
            if earlier is not None:
                return earlier
        raise
    except Exception:
        _forget_file(stored.stored_name if stored else None)
        raise
    return message


def _offline_members(room: Room, sender: User) -> set[int]:
    """Members other than the sender with no open connection: they get a web push."""
    members = set(room_member_ids(room=room)) - {sender.id}
    return members - online_user_ids(members)


def _forget_file(stored_name: str | None) -> None:
    if stored_name:
        from chat.files import file_remove

        file_remove(stored_name)


def _publish_message(room: Room, message: Message, event_type: str, *, notify: Iterable[int] = ()) -> None:
    slug = room.organization.slug
    data = events.message_data(message, slug=slug)
    push = None
    offline = set(notify)
    if offline and message.sender is not None:
        sender_name = message.sender.display_name
        title = sender_name if room.kind == RoomKind.DIRECT else f"{sender_name} ({_room_label(room)})"
        push = push_request(
            offline, title=title, body=_first_line(message), url=f"/{slug}/talk/{room.id}/", tag=f"talk-{room.id}"
        )
    publish_on_commit(events.room_group(room.id), event_type, data, push=push)


def _room_label(room: Room) -> str:
    if room.kind == RoomKind.DEPARTMENT and room.department is not None:
        return room.department.name
    return room.name


def _lock_message(message: Message) -> Message:
    # Lock only the message row: PostgreSQL refuses FOR UPDATE on the nullable side of an outer join.
    return (
        Message.objects.select_for_update(of=("self",))
        .select_related("room", "room__organization", "sender", "attachment")
        .get(id=message.id)
    )


@transaction.atomic
def message_edit(*, actor: User, message: Message, body: str) -> Message:
    message = _lock_message(message)
    if message.sender_id != actor.id:
        raise ApplicationError(_("You can only edit your own messages."), code="not_yours", status=403)
    if message.deleted_at is not None:
        raise ApplicationError(_("This message was deleted."), code="deleted")
    if timezone.now() - message.created_at > EDIT_WINDOW:
        raise ApplicationError(
            _("Messages can be edited for 7 days after they are sent."), code="edit_window_closed", status=403
        )
    body = _clean_body(body)
    if not body and message.attachment is None:
        raise ApplicationError(_("A message cannot be empty; delete it instead."), code="empty_message")
    if body == message.body:
        return message
    message.body = body
    message.edited_at = timezone.now()
    message.save(update_fields=["body", "edited_at"])
    _publish_message(message.room, message, events.MESSAGE_EDITED)
    return message


@transaction.atomic
def message_delete(*, actor: User, message: Message) -> Message:
    """Delete one's own message: its text and file go, a "deleted" placeholder stays in its place."""
    message = _lock_message(message)
    if message.sender_id != actor.id:
        raise ApplicationError(_("You can only delete your own messages."), code="not_yours", status=403)
    if message.deleted_at is not None:
        return message
    attachment = message.attachment
    message.deleted_at = timezone.now()
    message.body = ""
    message.save(update_fields=["deleted_at", "body"])
    if attachment is not None:
        stored_name = attachment.stored_name
        attachment.delete()
        message.attachment = None
        transaction.on_commit(lambda: _forget_file(stored_name))
    _publish_message(message.room, message, events.MESSAGE_DELETED)
    # The events that posted or edited it still hold the text for clients catching up: they get the placeholder.
    held_events_replace(
        events.room_group(message.room_id),
        event_types=[events.MESSAGE_POSTED, events.MESSAGE_EDITED],
        data_id=message.id,
        data=events.message_data(message, slug=message.room.organization.slug),
    )
    return message


@transaction.atomic
def room_read(*, user: User, room: Room, last_read_id: int) -> int:
    """Move the person's read position forward (never back). Returns the position."""
    newest = Message.objects.filter(room=room, id__lte=last_read_id).order_by("-id").values_list("id", flat=True)
    position = newest.first() or 0
    membership, _created = Membership.objects.select_for_update().get_or_create(room=room, user=user)
    if position <= membership.last_read_id:
        return membership.last_read_id
    membership.last_read_id = position
    membership.save(update_fields=["last_read_id"])
    if len(room_member_ids(room=room)) <= settings.TALK_LIVE_RECEIPTS_MAX_MEMBERS:
        group = events.room_group(room.id)
        data = {"user": user.id, "last_read_id": position}
        transaction.on_commit(lambda: publish_now(group, events.ROOM_READ, data), robust=True)
    return position


def typing_signal(*, user: User, room: Room) -> None:
    publish_now(events.room_group(room.id), events.ROOM_TYPING, {"user": user.id, "name": user.display_name})
