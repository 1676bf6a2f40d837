"""Talk REST endpoints under /<slug>/api/talk/."""

from django.urls import URLPattern, path

from chat import api, api_logs

urlpatterns: list[URLPattern] = [
    path("rooms/", api.RoomsApi.as_view(), name="api-talk-rooms"),
    path("rooms/direct/", api.DirectRoomApi.as_view(), name="api-talk-direct"),
    path("rooms/<int:room_id>/", api.RoomApi.as_view(), name="api-talk-room"),
    path("rooms/<int:room_id>/members/", api.RoomMembersApi.as_view(), name="api-talk-members"),
    path("rooms/<int:room_id>/members/<int:person_id>/", api.RoomMemberApi.as_view(), name="api-talk-member"),
    path("rooms/<int:room_id>/messages/", api.MessagesApi.as_view(), name="api-talk-messages"),
    path("rooms/<int:room_id>/read/", api.ReadApi.as_view(), name="api-talk-read"),
    path("rooms/<int:room_id>/typing/", api.TypingApi.as_view(), name="api-talk-typing"),
    path("messages/<int:message_id>/", api.MessageApi.as_view(), name="api-talk-message"),
    path("presence/", api.PresenceApi.as_view(), name="api-talk-presence"),
    path("people/", api.TalkPeopleApi.as_view(), name="api-talk-people"),
    path("files/<int:attachment_id>/", api.FileApi.as_view(), name="api-talk-file"),
    path("settings/", api.TalkSettingsApi.as_view(), name="api-talk-settings"),
    path("access/", api.TalkAccessListApi.as_view(), name="api-talk-access-list"),
    path("access/<int:person_id>/", api.TalkAccessApi.as_view(), name="api-talk-access"),
    path("logs/", api_logs.TalkLogsApi.as_view(), name="api-talk-logs"),
    path("logs/latest/", api_logs.TalkLogLatestApi.as_view(), name="api-talk-log-latest"),
    path("logs/<int:log_id>/", api_logs.TalkLogApi.as_view(), name="api-talk-log"),
]
