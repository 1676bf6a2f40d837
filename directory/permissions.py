"""Small DRF permission classes that compose: `[IsCrisisManager | IsSafetyAdmin]`, `[IsSystemAdmin & InSudoMode]`.

Organisation scoping is not a permission: `OrgAPIView` resolves the slug with `access_organization`, which
answers 404 to anyone outside the organisation before any permission is checked."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from rest_framework.permissions import BasePermission

from directory.models import Role

SUDO_SESSION_KEY = "sudo_at"


class _HasRole(BasePermission):
    roles: tuple[Role, ...] = ()
    message = "Your role does not allow this."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_role(*self.roles))


class IsSystemAdmin(_HasRole):
    roles = (Role.SYSTEM_ADMIN,)


class IsCrisisManager(_HasRole):
    roles = (Role.CRISIS_MANAGER,)


class IsSafetyAdmin(_HasRole):
    roles = (Role.ADMIN_ANPI,)


class IsManager(_HasRole):
    roles = (Role.MANAGER,)


class IsDepartmentManager(_HasRole):
    roles = (Role.DEPARTMENT_MANAGER,)


class IsTalkAdmin(_HasRole):
    roles = (Role.ADMIN_GOTALK,)


# Registers and dispatches incidents (a safety administrator does what a crisis manager does there).
CanDispatch = IsCrisisManager | IsSafetyAdmin
# Sees every tally; department managers see their subtree, which selectors enforce.
SeesAllTallies = IsCrisisManager | IsSafetyAdmin | IsManager


def sudo_mode_active(request: HttpRequest) -> bool:
    at = request.session.get(SUDO_SESSION_KEY)
    return isinstance(at, (int, float)) and time.time() - at < settings.SUDO_MODE_SECONDS


def sudo_mode_start(request: HttpRequest) -> None:
    request.session[SUDO_SESSION_KEY] = time.time()


class InSudoMode(BasePermission):
    """The person entered their password within the last SUDO_MODE_SECONDS (15 minutes by default)."""

    message = "Enter your password again to change organisation settings."
    code = "sudo_required"

    def has_permission(self, request: Any, view: Any) -> bool:
        return sudo_mode_active(request)


class PasswordChanged(BasePermission):
    """Someone signed in with a one-time or initial password must choose their own first."""

    message = "Choose your own password first."
    code = "password_change_required"

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and not user.must_change_password)
