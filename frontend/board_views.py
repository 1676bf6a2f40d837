"""The live disaster board page (placeholder; the page helper fills it in)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from directory.models import Organization
from frontend.views import org_page


@never_cache
@require_GET
@org_page()
def board_page(request: HttpRequest, organization: Organization, incident_id: int) -> HttpResponse:
    raise NotImplementedError
