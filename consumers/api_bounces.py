"""The bounce intake: POST /api/mail/bounces/, where the mail server posts delivery status notifications and a
mail provider's webhook posts its bounce events. Site-level (not under an organisation): an address is an
address, whoever uses it."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from django.utils.translation import gettext as _
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError
from consumers.bounces import MAX_REPORT_BYTES, BounceParseError, bounce_record, dsn_parse, webhook_parse
from consumers.models import BounceSource
from safety.api import bearer_token_ok

MESSAGE_TYPES = frozenset({"message/rfc822", "text/plain", "multipart/report"})


def _too_large() -> ApplicationError:
    return ApplicationError(
        _("The bounce report is larger than %(limit)d bytes.") % {"limit": MAX_REPORT_BYTES},
        code="bounce_too_large",
        status=413,
    )


class MailBounceApi(APIView):
    """POST /api/mail/bounces/ with `Authorization: Bearer <MAIL_BOUNCE_TOKEN>` and either the whole DSN message
    (Content-Type message/rfc822 or text/plain; or multipart/report with its boundary, the body then being the
    MIME body) or the webhook JSON (application/json, shape in consumers/bounces.py).

    200 {"recorded", "failing", "deliveries_failed"}; 400 `bounce_parse_error`/`bounce_empty` (nothing recorded);
    401 bad token; 413 over MAX_REPORT_BYTES; 415 another content type; 404 while MAIL_BOUNCE_TOKEN is empty."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        token = settings.MAIL_BOUNCE_TOKEN
        if not token:
            raise Http404
        if not bearer_token_ok(request, token):
            return Response(
                {"code": "unauthorized", "message": _("A valid bearer token is required.")},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="mail-bounces"'},
            )
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > MAX_REPORT_BYTES:
            raise _too_large()
        try:
            raw = request.body
        except RequestDataTooBig:
            raise _too_large() from None
        if len(raw) > MAX_REPORT_BYTES:
            raise _too_large()
        if not raw.strip():
            raise ApplicationError(_("The request body is empty."), code="bounce_empty")
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        try:
            if content_type == "application/json":
                bounces = webhook_parse(_json(raw))
                source = BounceSource.WEBHOOK
            elif content_type in MESSAGE_TYPES:
                if content_type == "multipart/report":
                    # The body of a multipart/report request is the MIME body: give it back its header.
                    raw = f"Content-Type: {request.content_type}\r\n\r\n".encode("latin-1", "replace") + raw
                bounces = dsn_parse(raw, max_bytes=MAX_REPORT_BYTES + 4096)
                source = BounceSource.DSN
            else:
                raise ApplicationError(
                    _("Send a DSN as message/rfc822 or a webhook as application/json."),
                    code="bounce_unsupported_type",
                    status=415,
                )
        except BounceParseError as exc:
            raise ApplicationError(str(exc), code="bounce_parse_error") from None
        result = bounce_record(bounces=bounces, source=source)
        return Response(
            {"recorded": result.recorded, "failing": result.failing, "deliveries_failed": result.deliveries_failed}
        )


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BounceParseError(_("The body is not valid JSON.")) from None
