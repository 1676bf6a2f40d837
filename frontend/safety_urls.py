"""Safety-confirmation pages for administrators under /<slug>/safety/ (the REST endpoints they use are under
/<slug>/api/safety/). The person's own requests share the prefix (frontend.answer_urls); these all sit under
incidents/ and templates/, and the automatic-dispatch pages (frontend.autodispatch_views) under auto/."""

from django.urls import URLPattern, URLResolver, include, path

from frontend import autodispatch_views as auto
from frontend import board_views
from frontend import safety_views as views

urlpatterns: list[URLPattern | URLResolver] = [
    # Contact verification (連絡先の確認) for administrators (issue 9).
    path("checks/", include("frontend.checks_urls")),
    path("incidents/", views.incidents_page, name="safety-incidents"),
    path("incidents/new/", views.incident_new_page, name="safety-incident-new"),
    path("incidents/<int:incident_id>/", views.incident_page, name="safety-incident"),
    path("incidents/<int:incident_id>/board/", board_views.board_page, name="safety-board"),
    path("incidents/<int:incident_id>/edit/", views.incident_edit_page, name="safety-incident-edit"),
    path("templates/", views.templates_page, name="safety-templates"),
    path("auto/", auto.rules_page, name="safety-auto"),
    path("auto/rules/new/", auto.rule_new_page, name="safety-auto-rule-new"),
    path("auto/rules/<int:rule_id>/", auto.rule_page, name="safety-auto-rule"),
    path("auto/rules/<int:rule_id>/delete/", auto.rule_delete_page, name="safety-auto-rule-delete"),
    path("auto/verify/", auto.verify_page, name="safety-auto-verify"),
    path("auto/replay/", auto.replay_page, name="safety-auto-replay"),
    path("auto/log/", auto.log_page, name="safety-auto-log"),
]
