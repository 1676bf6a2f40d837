"""Talk pages under /<slug>/talk/ (the REST endpoints they use are under /<slug>/api/talk/)."""

from django.urls import URLPattern, path

from frontend import talk_views as views

urlpatterns: list[URLPattern] = [
    path("", views.talk_page, name="talk"),
    path("<int:room_id>/", views.talk_page, name="talk-room"),
    path("with/<int:person_id>/", views.talk_with, name="talk-with"),
    path("admin/", views.talk_admin, name="talk-admin"),
    path("logs/", views.talk_logs, name="talk-logs"),
]
