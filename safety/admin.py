"""The site operators' health page in Django admin (/admin/health/): `manage.py health` in the browser, linked
from the admin index. Superusers only: it names the Redis hosts and the state of every organisation's sends."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path
from django.utils.translation import gettext as _

from safety.health import FAIL, OK, WARN, health_report, worst

LEVELS = {OK: "success", WARN: "warning", FAIL: "error"}


def health_view(request: HttpRequest) -> TemplateResponse:
    if not request.user.is_superuser:
        raise PermissionDenied
    checks = health_report()
    status = worst(checks)
    labels = {OK: _("OK"), WARN: _("Warning"), FAIL: _("Failing")}
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": _("System health"),
        "status": status,
        "status_label": labels[status],
        "status_level": LEVELS[status],
        "checks": [{"check": c, "label": labels[c.status], "level": LEVELS[c.status]} for c in checks],
    }
    return TemplateResponse(request, "admin/tsunagu_health.html", context)


_admin_urls = admin.site.get_urls


def _urls_with_health() -> list[URLPattern | URLResolver]:
    return [path("health/", admin.site.admin_view(health_view), name="health"), *_admin_urls()]


admin.site.get_urls = _urls_with_health  # type: ignore[method-assign]
admin.site.index_template = "admin/tsunagu_index.html"
