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
        samples = settings.BASE_DIR.parent / "shared" / "fixtures" / "directory"
        organization = demo_seed(password=password, sample_dir=samples if samples.is_dir() else None)
        self.stdout.write(f"Demo organisation: {organization.name} ({organization.slug})")
        self.stdout.write(f"Sign in at {settings.SITE_URL}/{organization.slug}/")
        self.stdout.write(f"  login ID: admin   password: {password}")
        if samples.is_dir():
            self.stdout.write(f"  people from the sample files in {samples} sign in with their initial passwords")
        else:
            self.stdout.write("  every demo person has the same password")
