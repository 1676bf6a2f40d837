"""Request hygiene shared by every view."""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse


def reject_nul_middleware(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """A NUL character in a query or form value is never valid input (PostgreSQL text cannot hold it):
    answer 400 before any view or the lockout sees it, instead of a database error. A form over Django's limits
    (DATA_UPLOAD_MAX_MEMORY_SIZE, _NUMBER_FIELDS, _NUMBER_FILES) is answered here too, as JSON like every API
    error, instead of Django's HTML 400 page: reading it here is where those limits trip."""

    def middleware(request: HttpRequest) -> HttpResponse:
        content_type = request.content_type or ""
        form = request.method == "POST" and content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
        try:
            posted = request.POST if form else None
        except RequestDataTooBig:
            return JsonResponse({"code": "too_large", "message": "The request is too large."}, status=413)
        except (TooManyFieldsSent, TooManyFilesSent):
            return JsonResponse(
                {"code": "too_many_fields", "message": "The request has too many fields or files."}, status=400
            )
        for values in (request.GET, posted):
            if values is None:
                continue
            for key, items in values.lists():
                if "\x00" in key or any("\x00" in item for item in items):
                    return JsonResponse(
                        {"code": "invalid", "message": "Input must not contain NUL characters."}, status=400
                    )
        return get_response(request)

    return middleware
