"""REST endpoints of the delivery core: a person's web push subscriptions (one per browser)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from consumers.models import PushSubscription
from consumers.push import subscription_delete, subscription_upsert
from directory.api import OrgAPIView


class SubscriptionOut(serializers.ModelSerializer[PushSubscription]):
    class Meta:
        model = PushSubscription
        fields = ["id", "user_agent", "created_at", "last_success_at", "failure_count"]


class PushSubscriptionApi(OrgAPIView):
    class In(serializers.Serializer[Any]):
        endpoint = serializers.CharField(max_length=2048)
        keys = serializers.DictField(child=serializers.CharField(max_length=200))

    class DeleteIn(serializers.Serializer[Any]):
        endpoint = serializers.CharField(max_length=2048, required=False)
        id = serializers.IntegerField(required=False)

    def get(self, request: Request, slug: str) -> Response:
        rows = PushSubscription.objects.filter(user=self.person).order_by("-created_at")
        return Response(SubscriptionOut(rows, many=True).data)

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
        )
        return Response(SubscriptionOut(subscription).data, status=201)

    def delete(self, request: Request, slug: str) -> Response:
        data = self.DeleteIn(data=request.data)
        data.is_valid(raise_exception=True)
        deleted = subscription_delete(
            user=self.person,
            endpoint=data.validated_data.get("endpoint"),
            subscription_id=data.validated_data.get("id"),
        )
        return Response({"deleted": deleted})
