"""REST endpoints of the signed-in person's private contacts, under /<slug>/api/me/contacts/. Only ever the
person's own: someone else's contact id is a 404, and no administrator endpoint lists them."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from directory.api import OrgAPIView
from directory.contacts import (
    MAX_PRIVATE_CONTACTS,
    private_contact_add,
    private_contact_list,
    private_contact_remove,
    private_contact_resend,
)


class ContactOut(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    address = serializers.CharField()
    state = serializers.CharField()  # pending | confirmed | failing
    confirmed = serializers.BooleanField()
    confirmed_at = serializers.DateTimeField(allow_null=True)
    confirmation_sent_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


def _one(user: Any, contact_id: int) -> dict[str, Any]:
    row = next(r for r in private_contact_list(user=user) if r.id == contact_id)
    return dict(ContactOut(row).data)


class PrivateContactsApi(OrgAPIView):
    """GET: {"contacts": [...], "max": 3}. POST {"address"}: 201 with the new (pending) contact; its
    confirmation link is mailed to it. 400 `contact_bad_address` / `contact_work_address` /
    `contact_duplicate` / `contact_limit`; 429 `contact_too_many_mails`."""

    class In(serializers.Serializer[Any]):
        address = serializers.CharField(max_length=320, trim_whitespace=True)

    def get(self, request: Request, slug: str) -> Response:
        rows = private_contact_list(user=self.person)
        return Response({"contacts": ContactOut(rows, many=True).data, "max": MAX_PRIVATE_CONTACTS})

    def post(self, request: Request, slug: str) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        contact = private_contact_add(user=self.person, address=data.validated_data["address"])
        return Response(_one(self.person, contact.id), status=201)


class PrivateContactApi(OrgAPIView):
    """DELETE: 204; 404 for a contact that is not the person's own."""

    def delete(self, request: Request, slug: str, contact_id: int) -> Response:
        private_contact_remove(user=self.person, contact_id=contact_id)
        return Response(status=204)


class PrivateContactResendApi(OrgAPIView):
    """POST: mail a new confirmation link; 200 with the contact. 400 `contact_already_confirmed`,
    429 `contact_too_many_mails`, 404 for a contact that is not the person's own."""

    def post(self, request: Request, slug: str, contact_id: int) -> Response:
        contact = private_contact_resend(user=self.person, contact_id=contact_id)
        return Response(_one(self.person, contact.id))
