"""The person's confirm page of a contact check (連絡先の確認), /<slug>/check/<token>/: no sign-in, the signed
token in the address is the credential."""

from django.urls import URLPattern, path

from frontend import checks_views as views

urlpatterns: list[URLPattern] = [
    path("<str:token>/", views.check_link_page, name="check-link"),
]
