"""REST endpoints of the safety app. For now: pushing a JMA document in (drills, replays, a relay)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError
from safety.events import report_data
from safety.jma.ingest import JmaDocumentTooLarge, jma_document_ingest_result
from safety.jma.parser import JmaParseError
from safety.models import JmaSource

MAX_URL_LENGTH = 500


def bearer_token_ok(request: Request, expected: str) -> bool:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


class JmaDocumentPushApi(APIView):
    """POST /api/jma/documents/[?url=…]: the raw XML as the body, `Authorization: Bearer <JMA_INGEST_TOKEN>`.

    201 stored (body: the report summary), 200 already stored, 400 `jma_parse_error` (nothing stored),
    401 bad token, 413 over JMA_MAX_DOCUMENT_BYTES, 404 while JMA_INGEST_TOKEN is empty (endpoint off)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        token = settings.JMA_INGEST_TOKEN
        if not token:
            raise Http404
        if not bearer_token_ok(request, token):
            return Response(
                {"code": "unauthorized", "message": "A valid bearer token is required."},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="jma"'},
            )
        limit = settings.JMA_MAX_DOCUMENT_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise JmaDocumentTooLarge(declared, limit)
        try:
            raw = request.body
        except RequestDataTooBig:
            raise JmaDocumentTooLarge(declared, limit) from None
        if not raw:
            raise ApplicationError("The request body must be the JMA XML document.", code="jma_empty")
        url = request.query_params.get("url", "").strip() or f"push:{hashlib.sha256(raw).hexdigest()}"
        if len(url) > MAX_URL_LENGTH:
            raise ApplicationError(f"url is longer than {MAX_URL_LENGTH} characters.", code="jma_bad_url")
        try:
            result = jma_document_ingest_result(url=url, raw=raw, source=JmaSource.PUSH)
        except JmaParseError as exc:
            raise ApplicationError(f"The document is not a JMA report: {exc}", code="jma_parse_error") from None
        body = {"url": result.document.url, **report_data(result.document)}
        return Response(body, status=201 if result.created else 200)
