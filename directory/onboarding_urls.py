"""URLs of onboarding (invitations, sign-in sheets, the welcome link) and personal groups, under /<slug>/.

The API paths resolve to /<slug>/api/…; config/urls.py tries its own /<slug>/api/ patterns first and falls
through to these, so none of them may reuse a path listed there."""

from django.urls import URLPattern, path

from directory import onboarding_api
from frontend import onboarding_views

urlpatterns: list[URLPattern] = [
    path("api/onboarding/invitations/", onboarding_api.InvitationApi.as_view(), name="api-invitations"),
    path("api/groups/", onboarding_api.GroupListApi.as_view(), name="api-groups"),
    path("api/groups/<int:group_id>/", onboarding_api.GroupApi.as_view(), name="api-group"),
    path("onboarding/", onboarding_views.onboarding_page, name="onboarding"),
    path("onboarding/sheet/<int:department_id>/", onboarding_views.sign_in_sheet, name="onboarding-sheet"),
    path("welcome/<str:uidb64>/<str:token>/", onboarding_views.welcome, name="welcome"),
    path("groups/", onboarding_views.groups_page, name="groups"),
]
