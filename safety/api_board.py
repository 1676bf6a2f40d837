"""REST endpoints of the live board under /<slug>/api/safety/incidents/<id>/: the board as a snapshot (what the
board socket sends on subscribe), instructions (対策指示) and the instruction room (対策室)."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from chat.selectors import is_member
from config.params import is_id
from directory.api import OrgAPIView
from directory.permissions import PasswordChanged
from safety import selectors, services
from safety.api_safety import ManagesIncidents, ViewsResults
from safety.board import board_access, board_key_for, board_snapshot, instruction_data, instruction_list
from safety.events import board_group
from safety.models import Incident
from safety.selectors import access_incident


def department_param(raw: str) -> int | None:
    """?department=N of the board (the API and the page): absent or empty is None, anything but an id a 404; 0
    comes back as 0, and board_access refuses it."""
    if not raw:
        return None
    if not is_id(raw):
        raise Http404
    return int(raw)


def room_data(incident: Incident, person: Any, *, slug: str) -> dict[str, Any] | None:
    room = incident.room
    if room is None:
        return None
    member = is_member(person, room)
    return {
        "id": room.id,
        "name": room.name,
        "is_member": member,
        "url": f"/{slug}/talk/{room.id}/" if member else None,
    }


class BoardApi(OrgAPIView):
    """GET: the board of the whole incident, or (?department=N) of one department's subtree, with the stream
    that keeps it live. A department manager without ?department gets their own subtree."""

    permission_classes = [IsAuthenticated, PasswordChanged, ViewsResults]

    def get(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        department_id = department_param(request.query_params.get("department", ""))
        # ?department=0 names no department: 404 (board_access refuses the key), not the caller's default board.
        if department_id is None:
            stream = board_key_for(self.person, incident)
        else:
            stream = board_group(incident.id, department_id)
        incident, department_id = board_access(self.person, stream.split(".", 1)[1])
        return Response({"stream": stream, "board": board_snapshot(incident, department_id)})


class InstructionsApi(OrgAPIView):
    """GET: the incident's instructions, newest first (whoever sees its results). POST {body}: post one (crisis
    managers and safety administrators); it streams to the boards and reaches the people asked."""

    permission_classes = [IsAuthenticated, PasswordChanged, ViewsResults]

    class In(serializers.Serializer[Any]):
        body = serializers.CharField(max_length=services.MAX_INSTRUCTION, trim_whitespace=True)

    def get(self, request: Request, slug: str, incident_id: int) -> Response:
        return Response(instruction_list(incident=access_incident(self.person, incident_id)))

    def post(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        if not selectors.can_manage_incidents(self.person):
            self.permission_denied(request, message=ManagesIncidents.message)
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        instruction = services.instruction_post(incident=incident, actor=self.person, body=data.validated_data["body"])
        return Response(instruction_data(instruction), status=201)


class InstructionRoomApi(OrgAPIView):
    """GET: the incident's instruction room, if it has one, and whether the caller may open it. POST
    {member_ids}: create it with these people (or add them); the caller becomes one of its administrators."""

    permission_classes = [IsAuthenticated, PasswordChanged, ViewsResults]

    class In(serializers.Serializer[Any]):
        member_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), max_length=500, default=list)

    def get(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        return Response(
            {
                "room": room_data(incident, self.person, slug=slug),
                "can_open": selectors.can_manage_incidents(self.person),
            }
        )

    def post(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        if not selectors.can_manage_incidents(self.person):
            self.permission_denied(request, message=ManagesIncidents.message)
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        created = incident.room_id is None
        services.instruction_room_open(
            incident=incident, actor=self.person, member_ids=data.validated_data["member_ids"]
        )
        incident.refresh_from_db(fields=["room"])
        return Response(
            {"room": room_data(incident, self.person, slug=slug), "can_open": True}, status=201 if created else 200
        )
