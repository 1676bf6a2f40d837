"""REST endpoints of talk under /<slug>/api/talk/: rooms, messages, read positions, typing, presence, files,
and the talk administrator's settings. Messages are sent here (validation, throttling and the transaction in
one place) and delivered over the WebSocket."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, Http404
from django.utils.translation import gettext as _
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from chat import selectors, services
from chat.events import message_data, room_group
from chat.models import FilePolicy, Room, RoomKind
from chat.selectors import RoomSummary, access_attachment, access_message, access_room
from config.errors import ApplicationError
from config.params import is_id
from config.throttle import throttle_allow
from consumers.presence import online_user_ids
from directory.api import OrgAPIView
from directory.models import User
from directory.permissions import IsTalkAdmin, PasswordChanged
from directory.selectors import access_person, person_search


class UsesTalk(BasePermission):
    """Only people with TALK_AVAILABLE see talk; everyone else gets 403 from every talk endpoint."""

    message = "Talk is not available to you."
    code = "talk_unavailable"

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.talk_available)


class TalkAPIView(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, UsesTalk]


def summary_data(summary: RoomSummary, *, slug: str) -> dict[str, Any]:
    room = summary.room
    return {
        "id": room.id,
        "kind": room.kind,
        "name": summary.name,
        "stream": room_group(room.id),
        "members_count": summary.members_count,
        "unread": summary.unread,
        "last_read_id": summary.last_read_id,
        "last_message": message_data(summary.last_message, slug=slug) if summary.last_message else None,
        "other": {"id": summary.other.id, "name": summary.other.display_name} if summary.other else None,
        "is_admin": summary.is_admin,
        "can_post": room.members_may_post or summary.is_admin,
        "url": f"/{slug}/talk/{room.id}/",
    }


def _room_summary(user: User, room_id: int) -> RoomSummary:
    found = selectors.room_summaries(user=user, room_ids=[room_id])
    if not found:
        raise Http404
    return found[0]


def room_detail_data(person: User, room: Room, *, slug: str) -> dict[str, Any]:
    """The open room: its summary, members, everyone's read position and what the person may do there."""
    data = summary_data(_room_summary(person, room.id), slug=slug)
    members = selectors.room_members(room=room)
    data["members"] = members
    data["read"] = {str(uid): pos for uid, pos in selectors.read_positions(room=room).items()}
    data["live_receipts"] = len(members) <= settings.TALK_LIVE_RECEIPTS_MAX_MEMBERS
    data["can_manage"] = room.kind in services.MANAGED_KINDS and data["is_admin"]
    data["can_add_members"] = room.kind == RoomKind.GROUP or data["can_manage"]
    return data


def _ensure_department_room(user: User) -> None:
    if user.department_id and user.talk_available:
        services.department_room_ensure(department=user.department)  # type: ignore[arg-type]


class RoomsApi(TalkAPIView):
    class CreateIn(serializers.Serializer[Any]):
        name = serializers.CharField(max_length=200)
        member_ids = serializers.ListField(child=serializers.IntegerField(), max_length=services.MAX_GROUP_MEMBERS)

    def get(self, request: Request, slug: str) -> Response:
        _ensure_department_room(self.person)
        summaries = selectors.room_summaries(user=self.person)
        return Response([summary_data(s, slug=slug) for s in summaries])

    def post(self, request: Request, slug: str) -> Response:
        data = self.CreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        room = services.room_group_create(creator=self.person, **data.validated_data)
        return Response(summary_data(_room_summary(self.person, room.id), slug=slug), status=201)


class DirectRoomApi(TalkAPIView):
    class In(serializers.Serializer[Any]):
        person_id = serializers.IntegerField()

    def post(self, request: Request, slug: str) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        other = access_person(self.person, data.validated_data["person_id"])
        room = services.room_direct_open(user=self.person, other=other)
        return Response(summary_data(_room_summary(self.person, room.id), slug=slug))


class RoomApi(TalkAPIView):
    class PatchIn(serializers.Serializer[Any]):
        name = serializers.CharField(max_length=200)

    def get(self, request: Request, slug: str, room_id: int) -> Response:
        return Response(room_detail_data(self.person, access_room(self.person, room_id), slug=slug))

    def patch(self, request: Request, slug: str, room_id: int) -> Response:
        room = access_room(self.person, room_id)
        data = self.PatchIn(data=request.data)
        data.is_valid(raise_exception=True)
        services.room_rename(actor=self.person, room=room, name=data.validated_data["name"])
        return self.get(request, slug, room_id)


class RoomMembersApi(TalkAPIView):
    class In(serializers.Serializer[Any]):
        person_ids = serializers.ListField(
            child=serializers.IntegerField(), min_length=1, max_length=services.MAX_GROUP_MEMBERS
        )

    def post(self, request: Request, slug: str, room_id: int) -> Response:
        room = access_room(self.person, room_id)
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        services.room_members_add(actor=self.person, room=room, member_ids=data.validated_data["person_ids"])
        return Response({"members": selectors.room_members(room=room)})


class RoomMemberApi(TalkAPIView):
    def delete(self, request: Request, slug: str, room_id: int, person_id: int) -> Response:
        room = access_room(self.person, room_id)
        member = access_person(self.person, person_id, include_inactive=True)
        services.room_member_remove(actor=self.person, room=room, member=member)
        return Response(status=204)


class MessagesApi(TalkAPIView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class In(serializers.Serializer[Any]):
        body = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=20000, trim_whitespace=False
        )
        client_id = serializers.CharField(required=False, allow_null=True, default=None, max_length=64)
        file = serializers.FileField(required=False, allow_null=True, default=None, allow_empty_file=True)

    def get(self, request: Request, slug: str, room_id: int) -> Response:
        room = access_room(self.person, room_id)
        before = request.query_params.get("before")
        if before is not None and not is_id(before):
            raise ApplicationError(_("before must be a message id."), code="bad_before")
        limit = request.query_params.get("limit", "")
        size = min(int(limit), 100) if is_id(limit) and int(limit) > 0 else selectors.PAGE_SIZE
        messages, has_more = selectors.message_page(
            room=room, before_id=int(before) if before is not None else None, limit=size
        )
        return Response({"messages": [message_data(m, slug=slug) for m in messages], "has_more": has_more})

    def post(self, request: Request, slug: str, room_id: int) -> Response:
        room = access_room(self.person, room_id)
        declared = str(request.META.get("CONTENT_LENGTH") or "0")
        length = int(declared) if declared.isdigit() else 0
        if length > settings.TALK_FILE_MAX_BYTES + 1024 * 1024:
            raise ApplicationError(
                _("Files larger than %(mb)d MB cannot be sent.") % {"mb": settings.TALK_FILE_MAX_BYTES // 2**20},
                code="file_too_large",
                status=413,
            )
        if not throttle_allow(
            f"talk-send:{self.person.id}", limit=settings.TALK_SEND_RATE_PER_MINUTE, window_seconds=60
        ):
            raise ApplicationError(
                _("You are sending messages too fast; wait a moment."), code="too_many_messages", status=429
            )
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        message = services.message_send(
            room=room,
            sender=self.person,
            body=data.validated_data["body"],
            client_id=data.validated_data["client_id"],
            upload=data.validated_data["file"],
        )
        return Response(message_data(message, slug=slug), status=201)


class MessageApi(TalkAPIView):
    class PatchIn(serializers.Serializer[Any]):
        body = serializers.CharField(allow_blank=True, max_length=20000, trim_whitespace=False)

    def patch(self, request: Request, slug: str, message_id: int) -> Response:
        message = access_message(self.person, message_id)
        data = self.PatchIn(data=request.data)
        data.is_valid(raise_exception=True)
        message = services.message_edit(actor=self.person, message=message, body=data.validated_data["body"])
        return Response(message_data(message, slug=slug))

    def delete(self, request: Request, slug: str, message_id: int) -> Response:
        message = access_message(self.person, message_id)
        message = services.message_delete(actor=self.person, message=message)
        return Response(message_data(message, slug=slug))


class ReadApi(TalkAPIView):
    class In(serializers.Serializer[Any]):
        last_read_id = serializers.IntegerField(min_value=0)

    def post(self, request: Request, slug: str, room_id: int) -> Response:
        room = access_room(self.person, room_id)
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        position = services.room_read(user=self.person, room=room, last_read_id=data.validated_data["last_read_id"])
        return Response({"last_read_id": position})


class TypingApi(TalkAPIView):
    def post(self, request: Request, slug: str, room_id: int) -> Response:
        room = access_room(self.person, room_id)
        if throttle_allow(f"talk-typing:{self.person.id}:{room.id}", limit=1, window_seconds=2):
            services.typing_signal(user=self.person, room=room)
        return Response(status=204)


class PresenceApi(TalkAPIView):
    def get(self, request: Request, slug: str) -> Response:
        raw = request.query_params.get("ids", "")
        ids = [int(part) for part in raw.split(",") if is_id(part.strip())][:500]
        people = set(
            User.objects.filter(organization=self.organization, id__in=ids, is_active=True).values_list("id", flat=True)
        )
        online = online_user_ids(people)
        return Response({str(uid): uid in online for uid in ids if uid in people})


class TalkPeopleApi(TalkAPIView):
    """People one can talk to (active talk users), for starting a 1:1 or building a group."""

    def get(self, request: Request, slug: str) -> Response:
        query = request.query_params.get("q", "")[:100]
        people = person_search(organization=self.organization, query=query, limit=51, talk_only=True)
        online = online_user_ids(p.id for p in people)
        return Response(
            [
                {
                    "id": p.id,
                    "name": p.display_name,
                    "department": p.department.name if p.department else "",
                    "online": p.id in online,
                }
                for p in people
                if p.id != self.person.id
            ][:50]
        )


class FileApi(TalkAPIView):
    """A file of a room the person may see, always as a download and never sniffed as anything else."""

    def get(self, request: Request, slug: str, attachment_id: int) -> FileResponse:
        from chat.files import download_filename, file_path

        attachment = access_attachment(self.person, attachment_id)
        try:
            handle = file_path(attachment.stored_name).open("rb")
        except (OSError, ValueError):
            raise Http404 from None
        response = FileResponse(handle, content_type=attachment.content_type)
        name = download_filename(attachment.name)
        ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
        response["Content-Disposition"] = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, no-store"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response


# --- talk administrator ---------------------------------------------------------------------------------


class TalkSettingsApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, IsTalkAdmin]

    class In(serializers.Serializer[Any]):
        file_policy = serializers.ChoiceField(choices=FilePolicy.choices, required=False)
        retention_days = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=3650)

    def get(self, request: Request, slug: str) -> Response:
        return Response(self._out(selectors.talk_settings_get(organization=self.organization)))

    def patch(self, request: Request, slug: str) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        row = services.talk_settings_update(
            organization=self.organization,
            file_policy=values.get("file_policy"),
            retention_days=values.get("retention_days"),
            clear_retention="retention_days" in values and values["retention_days"] is None,
        )
        return Response(self._out(row))

    @staticmethod
    def _out(row: Any) -> dict[str, Any]:
        return {
            "file_policy": row.file_policy,
            "file_policies": [{"value": v, "label": str(label)} for v, label in FilePolicy.choices],
            "retention_days": row.retention_days,
            "max_file_mb": settings.TALK_FILE_MAX_BYTES // 2**20,
        }


def _access_row(person: User, downloaders: set[int]) -> dict[str, Any]:
    return {
        "id": person.id,
        "name": person.display_name,
        "login_id": person.login_id,
        "department": person.department.name if person.department else "",
        "talk_available": person.talk_available,
        "may_download_logs": person.id in downloaders,
    }


class TalkAccessListApi(OrgAPIView):
    """The talk administrator's list: who may use talk and who may download talk logs."""

    permission_classes = [IsAuthenticated, PasswordChanged, IsTalkAdmin]

    def get(self, request: Request, slug: str) -> Response:
        query = request.query_params.get("q", "")[:100]
        offset = request.query_params.get("offset", "0")
        start = int(offset) if is_id(offset) else 0
        people = person_search(organization=self.organization, query=query, limit=101, offset=start)
        downloaders = _downloaders(self.organization)
        return Response(
            {
                "people": [_access_row(p, downloaders) for p in people[:100]],
                "has_more": len(people) > 100,
                "licence": {
                    "used": selectors.talk_users(organization_id=self.organization.id).count(),
                    "limit": self.organization.max_talk_users,
                },
            }
        )


def _downloaders(organization: Any) -> set[int]:
    row = selectors.talk_settings_get(organization=organization)
    return set(row.log_downloaders.values_list("id", flat=True))


class TalkAccessApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, IsTalkAdmin]

    class In(serializers.Serializer[Any]):
        talk_available = serializers.BooleanField(required=False)
        may_download_logs = serializers.BooleanField(required=False)

    def patch(self, request: Request, slug: str, person_id: int) -> Response:
        person = access_person(self.person, person_id)
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        person = services.talk_access_set(person=person, **data.validated_data)
        return Response(_access_row(person, _downloaders(self.organization)))
