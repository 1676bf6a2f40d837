"""Contact verification (連絡先の確認) REST endpoints under /<slug>/api/safety/checks/ (safety.api_checks)."""

from django.urls import URLPattern, path

from safety import api_checks as api

urlpatterns: list[URLPattern] = [
    path("", api.ChecksApi.as_view(), name="api-safety-checks"),
    path("schedule/", api.ScheduleApi.as_view(), name="api-safety-checks-schedule"),
    path("<int:check_id>/", api.CheckApi.as_view(), name="api-safety-check"),
    path("<int:check_id>/resend/", api.CheckResendApi.as_view(), name="api-safety-check-resend"),
    # The person's test notification, without signing in: the signed token is the credential.
    path("link/<str:token>/confirm/", api.LinkConfirmApi.as_view(), name="api-safety-check-confirm"),
    path("link/<str:token>/receipt/", api.LinkReceiptApi.as_view(), name="api-safety-check-receipt"),
]
