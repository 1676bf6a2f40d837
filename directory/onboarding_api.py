"""REST endpoints for invitations (system administrators) and personal groups (everyone, their own only).

Under /<slug>/api/: `onboarding/invitations/`, `groups/` and `groups/<id>/` (see directory/onboarding_urls.py)."""

from __future__ import annotations

from typing import Any, TypedDict

from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from config.errors import ApplicationError
from directory import groups, onboarding
from directory.api import OrgAPIView
from directory.api_directory import person_data
from directory.models import PersonalGroup
from directory.permissions import IsSystemAdmin, PasswordChanged

# Ids beyond a bigint are refused as bad input rather than reaching the database.
MAX_ID = 2**63 - 1


class GroupOut(TypedDict):
    id: int
    name: str
    # Each member in the directory API's own shape (`person_data`), so a client draws a person one way.
    members: list[dict[str, Any]]


def group_data(group: PersonalGroup, *, scheme: str) -> GroupOut:
    return GroupOut(
        id=group.id,
        name=group.name,
        members=[person_data(m, scheme=scheme) for m in groups.group_members(group)],
    )


class InvitationApi(OrgAPIView):
    """POST {"user_ids": [...]} or {"department_id": n, "include_subdepartments": bool,
    "only_never_signed_in": bool (default true)} → {"invited": n, "without_email": [...], "inactive": [...]}."""

    permission_classes = [IsAuthenticated, PasswordChanged, IsSystemAdmin]

    class In(serializers.Serializer[Any]):
        user_ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
            required=False,
            allow_empty=False,
            max_length=onboarding.MAX_INVITATIONS,
        )
        department_id = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
        include_subdepartments = serializers.BooleanField(required=False, default=False)
        only_never_signed_in = serializers.BooleanField(required=False, default=True)

    def post(self, request: Request, slug: str) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if ("user_ids" in values) == ("department_id" in values):
            raise ApplicationError(
                "Send either user_ids or department_id, not both and not neither.", code="bad_selection"
            )
        if "department_id" in values:
            department = onboarding.access_department(
                organization=self.organization, department_id=values["department_id"]
            )
            people = onboarding.department_people(
                department=department,
                include_subdepartments=values["include_subdepartments"],
                never_signed_in=values["only_never_signed_in"],
            )
            user_ids = [p.id for p in people]
        else:
            user_ids = values["user_ids"]
        result = onboarding.people_invite(organization=self.organization, actor=self.person, user_ids=user_ids)
        return Response({"invited": result.invited, "without_email": result.without_email, "inactive": result.inactive})


class GroupIn(serializers.Serializer[Any]):
    # Names are checked by the service, so a blank or long one gets its own error code.
    name = serializers.CharField(allow_blank=True, max_length=500, trim_whitespace=False)
    member_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, max_length=1000
    )


class GroupListApi(OrgAPIView):
    """GET: the caller's groups with their members. POST {"name", "member_ids"?}: create one."""

    def get(self, request: Request, slug: str) -> Response:
        scheme = self.organization.phone_url_scheme
        return Response([group_data(g, scheme=scheme) for g in groups.group_list(owner=self.person)])

    def post(self, request: Request, slug: str) -> Response:
        data = GroupIn(data=request.data)
        data.is_valid(raise_exception=True)
        group = groups.group_create(
            owner=self.person, name=data.validated_data["name"], member_ids=data.validated_data.get("member_ids")
        )
        group = groups.group_get(owner=self.person, group_id=group.id)
        return Response(group_data(group, scheme=self.organization.phone_url_scheme), status=201)


class GroupApi(OrgAPIView):
    """GET, PATCH {"name"?, "member_ids"?} and DELETE one of the caller's own groups; anyone else's is a 404."""

    class PatchIn(GroupIn):
        name = serializers.CharField(allow_blank=True, max_length=500, trim_whitespace=False, required=False)

    def get(self, request: Request, slug: str, group_id: int) -> Response:
        group = groups.group_get(owner=self.person, group_id=group_id)
        return Response(group_data(group, scheme=self.organization.phone_url_scheme))

    def patch(self, request: Request, slug: str, group_id: int) -> Response:
        group = groups.access_group(self.person, group_id)
        data = self.PatchIn(data=request.data)
        data.is_valid(raise_exception=True)
        groups.group_update(
            group=group, name=data.validated_data.get("name"), member_ids=data.validated_data.get("member_ids")
        )
        group = groups.group_get(owner=self.person, group_id=group_id)
        return Response(group_data(group, scheme=self.organization.phone_url_scheme))

    def delete(self, request: Request, slug: str, group_id: int) -> Response:
        groups.group_delete(group=groups.access_group(self.person, group_id))
        return Response(status=204)
