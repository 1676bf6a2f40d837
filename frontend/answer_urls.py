"""The person's own safety requests under /<slug>/safety/ (placeholder until built)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
