"""Safety-confirmation pages for administrators under /<slug>/safety/ (the REST endpoints they use are under
/<slug>/api/safety/). The person's own requests share the prefix (frontend.answer_urls); these all sit under
incidents/ and templates/."""

from django.urls import URLPattern, path

from frontend import board_views
from frontend import safety_views as views

urlpatterns: list[URLPattern] = [
    path("incidents/", views.incidents_page, name="safety-incidents"),
    path("incidents/new/", views.incident_new_page, name="safety-incident-new"),
    path("incidents/<int:incident_id>/", views.incident_page, name="safety-incident"),
    path("incidents/<int:incident_id>/board/", board_views.board_page, name="safety-board"),
    path("incidents/<int:incident_id>/edit/", views.incident_edit_page, name="safety-incident-edit"),
    path("templates/", views.templates_page, name="safety-templates"),
]
