"""Safety-confirmation pages for administrators under /<slug>/safety/ (placeholder until built)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
