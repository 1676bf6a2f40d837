"""Site-level URLs of the safety app, included at /api/jma/ (not under an organisation)."""

from __future__ import annotations

from django.urls import URLPattern, path

from safety.api import JmaDocumentPushApi

urlpatterns: list[URLPattern] = [
    path("documents/", JmaDocumentPushApi.as_view(), name="api-jma-documents"),
]
