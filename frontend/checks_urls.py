"""The administrators' contact verification page (連絡先の確認), /<slug>/safety/checks/."""

from django.urls import URLPattern, path

from frontend import checks_views as views

urlpatterns: list[URLPattern] = [
    path("", views.checks_page, name="safety-checks"),
]
