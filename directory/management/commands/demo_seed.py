"""manage.py demo_seed: the demo organisation `demo`, used by the README's run command."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from config.env import generated_secret
from directory.services import demo_seed, one_time_password


class Command(BaseCommand):
    help = "Create or refresh the demo organisation and print how to sign in."

    def handle(self, *args: Any, **options: Any) -> None:
        # Kept in the state directory so the printed sign-in stays the same from run to run.
        password = generated_secret("demo_password", one_time_password)
        organization = demo_seed(password=password)
        self.stdout.write(f"Demo organisation: {organization.name} ({organization.slug})")
        self.stdout.write(f"Sign in at {settings.SITE_URL}/{organization.slug}/")
        self.stdout.write(f"  login ID: admin   password: {password}   (every demo person has this password)")
