"""/<slug>/contacts/: confirming a private contact from its mailed link (no sign-in), and the profile section's
forms (frontend/contacts_views.py)."""

from django.urls import URLPattern, path

from frontend import contacts_views

urlpatterns: list[URLPattern] = [
    path("confirm/<str:token>/", contacts_views.confirm_page, name="private-contact-confirm"),
    path("add/", contacts_views.add, name="private-contact-add"),
    path("<int:contact_id>/resend/", contacts_views.resend, name="private-contact-resend"),
    path("<int:contact_id>/remove/", contacts_views.remove, name="private-contact-remove"),
]
