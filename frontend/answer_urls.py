"""The person's own safety requests under /<slug>/safety/: the open requests, and answering one in the app.
The administrators' pages share the prefix (frontend.safety_urls, all under incidents/ and templates/); the
signed link that needs no sign-in is /<slug>/answer/<token>/ (config/urls.py)."""

from django.urls import URLPattern, path

from frontend import answer_views as views

urlpatterns: list[URLPattern] = [
    path("", views.my_requests_page, name="safety-mine"),
    path("<int:incident_id>/", views.answer_page, name="safety-answer"),
]
