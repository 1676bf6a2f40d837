"""Directory REST endpoints under /<slug>/api/directory/."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
