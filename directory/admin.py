"""Django admin for site operators (is_staff people): organisations with their licences, departments,
people and roles. Organisation administrators use the directory pages instead."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect

from directory.importer import user_search_text
from directory.models import Department, ImportJob, Notice, Organization, PersonalGroup, RoleAssignment, User


class RoleInline(admin.TabularInline[RoleAssignment, User]):
    model = RoleAssignment
    extra = 0


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin[Organization]):
    list_display = ["slug", "name", "max_people", "max_talk_users", "max_safety_users", "created_at"]
    search_fields = ["slug", "name"]


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin[Department]):
    list_display = ["code", "name", "organization", "parent", "sort_order"]
    list_filter = ["organization"]
    search_fields = ["code", "name", "name_kana"]
    raw_id_fields = ["parent"]


@admin.register(User)
class UserAdmin(admin.ModelAdmin[User]):
    list_display = ["login_id", "last_name", "first_name", "organization", "department", "is_active"]
    list_filter = ["organization", "is_active", "talk_available", "is_staff"]
    search_fields = ["login_id", "last_name", "first_name", "last_name_kana", "email", "anpi_login_id"]
    raw_id_fields = ["department"]
    inlines = [RoleInline]
    readonly_fields = ["password", "last_login", "date_joined", "search_text", "invited_at"]
    exclude = ["is_superuser"]

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        obj.search_text = user_search_text(obj)
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        return False  # people are deactivated, never deleted: their chat and answer history stays


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin[ImportJob]):
    list_display = ["id", "organization", "status", "created_by", "created_at", "applied_at"]
    list_filter = ["status", "organization"]
    exclude = ["departments_file", "users_file"]  # they hold initial passwords
    readonly_fields = ["organization", "created_by", "status", "preview", "errors", "result", "full_sync"]


admin.site.register(Notice)
admin.site.register(PersonalGroup)
admin.site.site_header = "Tsunagu operations"


def _admin_login(request: HttpRequest, extra_context: Any = None) -> HttpResponseRedirect:
    # Operators sign in through their organisation's page like everyone else; there is no second password form.
    return HttpResponseRedirect("/")


admin.site.login = _admin_login  # type: ignore[method-assign]
