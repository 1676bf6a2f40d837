"""Request hygiene shared by every view."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse


def reject_nul_middleware(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """A NUL character in a query or form value is never valid input (PostgreSQL text cannot hold it):
    answer 400 before any view or the lockout sees it, instead of a database error."""

    def middleware(request: HttpRequest) -> HttpResponse:
        content_type = request.content_type or ""
        form = request.method == "POST" and content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
        for values in (request.GET, request.POST if form else None):
            if values is None:
                continue
            for key, items in values.lists():
                if "\x00" in key or any("\x00" in item for item in items):
                    return JsonResponse(
                        {"code": "invalid", "message": "Input must not contain NUL characters."}, status=400
                    )
        return get_response(request)

    return middleware
