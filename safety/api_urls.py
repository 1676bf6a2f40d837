"""Safety-confirmation REST endpoints under /<slug>/api/safety/."""

from django.urls import URLPattern, URLResolver, include, path

from safety import api_autodispatch as auto
from safety import api_board
from safety import api_safety as api

urlpatterns: list[URLPattern | URLResolver] = [
    # Contact verification (連絡先の確認) and the delivery status of an incident (issue 9).
    path("checks/", include("safety.checks_api_urls")),
    path("incidents/<int:incident_id>/deliveries/", include("safety.deliveries_api_urls")),
    path("templates/", api.TemplatesApi.as_view(), name="api-safety-templates"),
    path("templates/<int:template_id>/", api.TemplateApi.as_view(), name="api-safety-template"),
    path("people/", api.PeopleChoiceApi.as_view(), name="api-safety-people"),
    path("incidents/", api.IncidentsApi.as_view(), name="api-safety-incidents"),
    path("incidents/<int:incident_id>/", api.IncidentApi.as_view(), name="api-safety-incident"),
    path("incidents/<int:incident_id>/open/", api.IncidentOpenApi.as_view(), name="api-safety-open"),
    path("incidents/<int:incident_id>/complete/", api.IncidentCompleteApi.as_view(), name="api-safety-complete"),
    path("incidents/<int:incident_id>/dispatches/", api.DispatchesApi.as_view(), name="api-safety-dispatches"),
    path("incidents/<int:incident_id>/results/", api.ResultsApi.as_view(), name="api-safety-results"),
    path("incidents/<int:incident_id>/results.csv", api.ResultsCsvApi.as_view(), name="api-safety-results-csv"),
    path(
        "incidents/<int:incident_id>/people/<int:person_id>/answers/",
        api.PersonAnswersApi.as_view(),
        name="api-safety-person-answers",
    ),
    path("incidents/<int:incident_id>/board/", api_board.BoardApi.as_view(), name="api-safety-board"),
    path(
        "incidents/<int:incident_id>/instructions/", api_board.InstructionsApi.as_view(), name="api-safety-instructions"
    ),
    path("incidents/<int:incident_id>/room/", api_board.InstructionRoomApi.as_view(), name="api-safety-room"),
    path("mine/", api.MyRequestsApi.as_view(), name="api-safety-mine"),
    path("mine/<int:incident_id>/", api.MyAnswerApi.as_view(), name="api-safety-my-answer"),
    path("answer/<str:token>/", api.LinkAnswerApi.as_view(), name="api-safety-link-answer"),
    path("answer/<str:token>/receipt/", api.LinkReceiptApi.as_view(), name="api-safety-link-receipt"),
    # Automatic dispatch from JMA reports (自動一斉送信): rules, drill mode, verify, replay, the audit log.
    path("auto/rules/", auto.RulesApi.as_view(), name="api-safety-auto-rules"),
    path("auto/rules/<int:rule_id>/", auto.RuleApi.as_view(), name="api-safety-auto-rule"),
    path("auto/settings/", auto.SettingsApi.as_view(), name="api-safety-auto-settings"),
    path("auto/verify/", auto.VerifyApi.as_view(), name="api-safety-auto-verify"),
    path("auto/replay/", auto.ReplayApi.as_view(), name="api-safety-auto-replay"),
    path("auto/decisions/", auto.DecisionsApi.as_view(), name="api-safety-auto-decisions"),
    path(
        "auto/decisions/<int:decision_id>/cancel/",
        auto.DecisionCancelApi.as_view(),
        name="api-safety-auto-decision-cancel",
    ),
    path(
        "auto/decisions/<int:decision_id>/send-now/",
        auto.DecisionSendNowApi.as_view(),
        name="api-safety-auto-decision-send-now",
    ),
    path("auto/documents/", auto.DocumentsApi.as_view(), name="api-safety-auto-documents"),
]
