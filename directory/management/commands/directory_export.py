"""manage.py directory_export --org SLUG --out DIR: writes export_department_data_*.tsv and export_user_data_*.tsv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from directory.exporter import departments_export, export_filenames, users_export
from directory.models import Organization


class Command(BaseCommand):
    help = "Export the directory as the two TSV files administrators edit in Excel."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="organisation ID (slug)")
        parser.add_argument("--out", required=True, type=Path, help="directory to write the files into")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"No organisation has the ID {options['org']!r}.")
        out: Path = options["out"]
        try:
            out.mkdir(parents=True, exist_ok=True)
            departments_name, users_name = export_filenames()
            (out / departments_name).write_bytes(departments_export(organization=organization))
            (out / users_name).write_bytes(users_export(organization=organization))
        except OSError as exc:
            raise CommandError(f"Cannot write to {out}: {exc.strerror}") from None
        self.stdout.write(str(out / departments_name))
        self.stdout.write(str(out / users_name))
