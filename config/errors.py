"""Errors have one home: ApplicationError for anything a person can fix, mapped to a 400 with a stable code."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApplicationError(Exception):
    def __init__(self, message: str, *, code: str = "invalid", details: Any = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details
        self.status = status


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.details is not None:
            body["details"] = exc.details
        return Response(body, status=exc.status)
    if isinstance(exc, Http404):
        return Response({"code": "not_found", "message": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"code": "invalid", "message": "The input is not valid.", "fields": response.data}
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        code = getattr(detail, "code", None) or exc.default_code
        response.data = {"code": str(code), "message": str(detail)}
    return response
