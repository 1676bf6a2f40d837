"""REST endpoints of the delivery core: a person's web push subscriptions (one per browser), their devices list."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from django.utils.translation import gettext as _
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from config.errors import ApplicationError
from consumers.push import Device, device_list, device_of, subscription_delete, subscription_upsert
from directory.api import OrgAPIView


class DeviceOut(serializers.Serializer[Device]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    user_agent = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_success_at = serializers.DateTimeField(allow_null=True)
    last_failure_at = serializers.DateTimeField(allow_null=True)
    failure_count = serializers.IntegerField()
    failing = serializers.BooleanField()
    key_renewal_pending = serializers.BooleanField()
    endpoint_hash = serializers.CharField()


def device_data(device: Device) -> dict[str, Any]:
    return dict(DeviceOut(device).data)


class PushSubscriptionApi(OrgAPIView):
    class In(serializers.Serializer[Any]):
        endpoint = serializers.CharField(max_length=2048)
        keys = serializers.DictField(child=serializers.CharField(max_length=200))
        # The applicationServerKey the browser subscribed with (base64url); "" or absent: the current key.
        vapid_public_key = serializers.CharField(max_length=128, required=False, allow_blank=True, default="")

    class DeleteIn(serializers.Serializer[Any]):
        endpoint = serializers.CharField(max_length=2048, required=False)
        id = serializers.IntegerField(required=False)

    def get(self, request: Request, slug: str) -> Response:
        return Response([device_data(d) for d in device_list(user=self.person)])

    def post(self, request: Request, slug: str) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        keys = data.validated_data["keys"]
        subscription = subscription_upsert(
            user=self.person,
            endpoint=data.validated_data["endpoint"],
            p256dh=keys.get("p256dh", ""),
            auth=keys.get("auth", ""),
            user_agent=request.headers.get("User-Agent", ""),
            vapid_public_key=data.validated_data["vapid_public_key"],
        )
        return Response(device_data(device_of(subscription)), status=201)

    def delete(self, request: Request, slug: str) -> Response:
        """Remove one of the person's own devices. Anyone else's (or one already gone) is a 404."""
        data = self.DeleteIn(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, subscription_id = data.validated_data.get("endpoint"), data.validated_data.get("id")
        if endpoint is None and subscription_id is None:
            raise ApplicationError(_("Say which device to remove: its id or its endpoint."), code="invalid")
        deleted = subscription_delete(user=self.person, endpoint=endpoint, subscription_id=subscription_id)
        if not deleted:
            raise Http404
        return Response({"deleted": deleted})
