from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

from consumers.api import PushSubscriptionApi
from consumers.api_bounces import MailBounceApi
from directory import api as directory_api
from frontend import answer_views, disaster_views, views

slug = "<str:slug>"

api_patterns: list[URLPattern | URLResolver] = [
    path("me/", directory_api.MeApi.as_view(), name="api-me"),
    path("me/password/", directory_api.PasswordApi.as_view(), name="api-password"),
    path("sudo/", directory_api.SudoApi.as_view(), name="api-sudo"),
    path("organization/", directory_api.OrganizationSettingsApi.as_view(), name="api-organization"),
    path("notices/", directory_api.NoticeApi.as_view(), name="api-notices"),
    path("push/key/", directory_api.PushKeyApi.as_view(), name="api-push-key"),
    path("push/subscriptions/", PushSubscriptionApi.as_view(), name="api-push-subscriptions"),
    # Private contacts: the person's own e-mail addresses for safety notifications (issue 9).
    path("me/contacts/", include("directory.contacts_api_urls")),
    path("directory/", include("directory.api_urls")),
    path("talk/", include("chat.api_urls")),
    path("safety/", include("safety.api_urls")),
]

urlpatterns = [
    path("", views.find_organization, name="find"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/jma/", include("safety.urls")),
    path("api/mail/bounces/", MailBounceApi.as_view(), name="api-mail-bounces"),
    path("sw.js", views.service_worker, name="service-worker"),
    path("i18n/", include("django.conf.urls.i18n")),
    path(f"{slug}/api/", include(api_patterns)),
    path(f"{slug}/", views.login, name="login"),
    path(f"{slug}/logout/", views.logout, name="logout"),
    path(f"{slug}/home/", views.home, name="home"),
    path(f"{slug}/profile/", views.profile, name="profile"),
    path(f"{slug}/password/", views.password_change, name="password-change"),
    path(f"{slug}/password/reset/", views.password_reset, name="password-reset"),
    path(
        f"{slug}/password/reset/<str:uidb64>/<str:token>/", views.password_reset_confirm, name="password-reset-confirm"
    ),
    path(f"{slug}/sudo/", views.sudo, name="sudo"),
    path(f"{slug}/settings/", views.organization_settings, name="settings"),
    path(f"{slug}/help/", views.help_page, name="help"),
    path(f"{slug}/logo", views.logo, name="logo"),
    path(f"{slug}/manifest.webmanifest", views.manifest, name="manifest"),
    path(f"{slug}/directory/", include("frontend.directory_urls")),
    path(f"{slug}/disaster/", disaster_views.disaster_page, name="disaster"),
    path(f"{slug}/talk/", include("frontend.talk_urls")),
    # Safety confirmation: the administrators' pages, and the person's own requests and answer pages.
    path(f"{slug}/safety/", include("frontend.safety_urls")),
    path(f"{slug}/safety/", include("frontend.answer_urls")),
    path(f"{slug}/answer/<str:token>/", answer_views.link_answer_page, name="safety-link-answer"),
    # Confirming a private contact address, and a contact check (連絡先の確認) from its link: no sign-in needed.
    path(f"{slug}/contacts/", include("frontend.contacts_urls")),
    path(f"{slug}/check/", include("frontend.check_link_urls")),
    path(f"{slug}/", include("directory.onboarding_urls")),
]

handler404 = "frontend.views.not_found"
