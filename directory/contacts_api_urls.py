"""/<slug>/api/me/contacts/: the signed-in person's private contacts (directory/api_contacts.py)."""

from django.urls import URLPattern, path

from directory import api_contacts

urlpatterns: list[URLPattern] = [
    path("", api_contacts.PrivateContactsApi.as_view(), name="api-private-contacts"),
    path("<int:contact_id>/", api_contacts.PrivateContactApi.as_view(), name="api-private-contact"),
    path("<int:contact_id>/resend/", api_contacts.PrivateContactResendApi.as_view(), name="api-private-contact-resend"),
]
