"""manage.py org_create SLUG --name NAME --admin-email EMAIL: a new customer organisation."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.errors import ApplicationError
from directory.services import organization_create


class Command(BaseCommand):
    help = "Create an organisation and its first system administrator; prints a one-time password."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="organisation ID used in its URL, e.g. acme")
        parser.add_argument("--name", required=True, help="display name")
        parser.add_argument("--admin-email", required=True, help="the first system administrator's e-mail")
        parser.add_argument("--admin-login-id", default=None, help="login ID (default: the e-mail address)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            created = organization_create(
                slug=options["slug"],
                name=options["name"],
                admin_email=options["admin_email"],
                admin_login_id=options["admin_login_id"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Organisation: {created.organization.name} ({created.organization.slug})")
        self.stdout.write(f"Sign in at:   {settings.SITE_URL}/{created.organization.slug}/")
        self.stdout.write(f"Login ID:     {created.admin.login_id}")
        self.stdout.write(f"One-time password: {created.password}")
        self.stdout.write("The administrator must choose a new password at first sign-in.")
