"""Directory pages under /<slug>/directory/."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
