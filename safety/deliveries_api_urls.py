"""The delivery status of an incident, mounted at /<slug>/api/safety/incidents/<int:incident_id>/deliveries/."""

from django.urls import URLPattern, path

from safety.api_deliveries import DeliveriesApi

urlpatterns: list[URLPattern] = [
    path("", DeliveriesApi.as_view(), name="api-safety-deliveries"),
]
