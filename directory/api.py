"""REST endpoints of the directory: the signed-in person, organisation settings, notices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth import update_session_auth_hash
from django.http import Http404
from django.utils.translation import gettext as _
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError
from consumers.streams import default_streams
from consumers.vapid import vapid_keys
from directory import services
from directory.auth import password_confirm, request_person
from directory.events import notice_data
from directory.models import Organization, User
from directory.permissions import InSudoMode, IsSystemAdmin, PasswordChanged, sudo_mode_start
from directory.selectors import licence_usage, notice_list, organization_get


class OrgAPIView(APIView):
    """Every API under /<slug>/api/: 404 for a malformed or unknown slug and for anyone from another
    organisation, before permissions are checked."""

    permission_classes = [IsAuthenticated, PasswordChanged]
    organization: Organization

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        organization = organization_get(kwargs["slug"])
        user = request.user
        if user is not None and user.is_authenticated and user.organization_id != organization.id:
            raise Http404
        self.organization = organization
        super().initial(request, *args, **kwargs)

    @property
    def person(self) -> User:
        """The signed-in person (every view here requires sign-in)."""
        return request_person(self.request)


class MeOut(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    login_id = serializers.CharField()
    display_name = serializers.CharField()
    language = serializers.CharField()
    roles = serializers.SerializerMethodField()
    organization = serializers.SerializerMethodField()
    streams = serializers.SerializerMethodField()
    must_change_password = serializers.BooleanField()

    def get_roles(self, user: Any) -> list[str]:
        return sorted(role.value for role in user.roles)

    def get_organization(self, user: Any) -> dict[str, str]:
        return {"slug": user.organization.slug, "name": user.organization.name}

    def get_streams(self, user: Any) -> list[str]:
        return default_streams(user)


class MeApi(OrgAPIView):
    permission_classes = [IsAuthenticated]  # readable before the one-time password is replaced

    class PatchIn(serializers.Serializer[Any]):
        language = serializers.ChoiceField(choices=["ja", "en"])

    def get(self, request: Request, slug: str) -> Response:
        return Response(MeOut(request.user).data)

    def patch(self, request: Request, slug: str) -> Response:
        data = self.PatchIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_language_set(user=self.person, language=data.validated_data["language"])
        return Response(MeOut(user).data)


class PasswordApi(OrgAPIView):
    permission_classes = [IsAuthenticated]

    class In(serializers.Serializer[Any]):
        current_password = serializers.CharField()
        new_password = serializers.CharField(max_length=128)

    def post(self, request: Request, slug: str) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        if not password_confirm(request._request, self.person, data.validated_data["current_password"]):
            raise ApplicationError(_("The current password is wrong."), code="wrong_password", status=403)
        user = services.password_change(user=self.person, new_password=data.validated_data["new_password"])
        update_session_auth_hash(request._request, user)
        return Response({"ok": True})


class SudoApi(OrgAPIView):
    class In(serializers.Serializer[Any]):
        password = serializers.CharField()

    def post(self, request: Request, slug: str) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        if not password_confirm(request._request, self.person, data.validated_data["password"]):
            raise ApplicationError("The password is wrong.", code="wrong_password", status=403)
        sudo_mode_start(request._request)
        return Response({"ok": True})


class OrganizationSettingsApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, IsSystemAdmin, InSudoMode]

    class In(serializers.Serializer[Any]):
        name = serializers.CharField(max_length=100, required=False)
        logo = serializers.FileField(required=False)
        remove_logo = serializers.BooleanField(required=False, default=False)
        phone_url_scheme = serializers.CharField(max_length=100, required=False)

    def get(self, request: Request, slug: str) -> Response:
        return Response(self._out(self.organization))

    def patch(self, request: Request, slug: str) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        organization = services.organization_settings_update(
            organization=self.organization,
            name=data.validated_data.get("name"),
            logo=data.validated_data.get("logo"),
            remove_logo=data.validated_data["remove_logo"],
            phone_url_scheme=data.validated_data.get("phone_url_scheme"),
        )
        return Response(self._out(organization))

    @staticmethod
    def _out(organization: Organization) -> dict[str, Any]:
        return {
            "slug": organization.slug,
            "name": organization.name,
            "logo_url": f"/{organization.slug}/logo" if organization.logo else None,
            "phone_url_scheme": organization.phone_url_scheme,
            "licence": licence_usage(organization=organization),
        }


class NoticeApi(OrgAPIView):
    class In(serializers.Serializer[Any]):
        title = serializers.CharField(max_length=200)
        body = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
        push = serializers.BooleanField(required=False, default=True)

    def get_permissions(self) -> Sequence[Any]:
        if self.request.method == "POST":
            return [IsAuthenticated(), PasswordChanged(), IsSystemAdmin()]
        return super().get_permissions()

    def get(self, request: Request, slug: str) -> Response:
        return Response([notice_data(n) for n in notice_list(organization=self.organization, limit=50)])

    def post(self, request: Request, slug: str) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        notice = services.notice_post(author=self.person, **data.validated_data)
        return Response(notice_data(notice), status=201)


class PushKeyApi(OrgAPIView):
    def get(self, request: Request, slug: str) -> Response:
        return Response({"public_key": vapid_keys().public})
