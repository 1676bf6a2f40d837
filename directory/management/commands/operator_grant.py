"""manage.py operator_grant --org SLUG LOGIN_ID [--revoke]: let a person use Django admin (/admin/)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from directory.models import User


class Command(BaseCommand):
    help = "Make a person a site operator (Django admin), or revoke it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("login_id")
        parser.add_argument("--org", required=True, help="organisation ID (slug)")
        parser.add_argument("--revoke", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(organization__slug=options["org"], login_id=options["login_id"]).first()
        if user is None:
            raise CommandError(f"No person {options['login_id']!r} in organisation {options['org']!r}.")
        user.is_staff = user.is_superuser = not options["revoke"]
        user.save(update_fields=["is_staff", "is_superuser"])
        self.stdout.write(f"{user.login_id}: site operator = {user.is_staff}")
