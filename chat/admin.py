"""Django admin for site operators: read-mostly views of rooms and talk settings (messages stay private)."""

from __future__ import annotations

from django.contrib import admin

from chat.models import Room, TalkLogFile, TalkSettings


@admin.register(TalkSettings)
class TalkSettingsAdmin(admin.ModelAdmin[TalkSettings]):
    list_display = ["organization", "file_policy", "retention_days", "archived_through_id"]
    readonly_fields = ["archived_through_id"]
    filter_horizontal = ["log_downloaders"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin[Room]):
    list_display = ["id", "organization", "kind", "name", "created_at", "last_message_at"]
    list_filter = ["organization", "kind"]
    readonly_fields = ["direct_key", "created_at", "last_message_at"]


@admin.register(TalkLogFile)
class TalkLogFileAdmin(admin.ModelAdmin[TalkLogFile]):
    list_display = ["organization", "day", "part", "message_count", "size"]
    list_filter = ["organization"]
    readonly_fields = ["stored_name", "message_count", "size", "first_message_id", "last_message_id"]
