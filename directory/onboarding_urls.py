"""URLs of onboarding (invitations, sign-in sheets) and personal groups, under /<slug>/."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
