"""The disaster information page: JMA reports as they arrive, for the people who run the response."""

from __future__ import annotations

import json

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache

from directory.auth import request_person
from directory.models import Organization
from frontend.views import _page, org_page
from safety.events import JMA_GROUP, can_read_reports, report_list


@never_cache
@org_page()
def disaster_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    person = request_person(request)
    if not can_read_reports(person):
        raise PermissionDenied
    reports = report_list(limit=30, language=person.language)
    streams = [f"user.{person.id}", f"org.{organization.id}", JMA_GROUP]
    return _page(
        request,
        "frontend/disaster.html",
        organization,
        reports=reports,
        streams_json=json.dumps(streams),
    )
