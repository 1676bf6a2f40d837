"""manage.py directory_import --org SLUG [--departments FILE] [--users FILE] [--dry-run] [--full-sync] --json

For scripts and nightly HR-system jobs. Applies through the same service as the web page and prints one JSON
object; exits 0 when the import applied (or a dry run found no error), 1 otherwise."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from directory.importer import import_apply, import_plan
from directory.models import Organization
from directory.tsv import MAX_FILE_BYTES


class Command(BaseCommand):
    help = "Import the directory's department and user TSV files (all or nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="organisation ID (slug)")
        parser.add_argument("--departments", type=Path, help="export_department_data_*.tsv")
        parser.add_argument("--users", type=Path, help="export_user_data_*.tsv")
        parser.add_argument("--dry-run", action="store_true", help="check and report, change nothing")
        parser.add_argument("--full-sync", action="store_true", help="deactivate people missing from the user file")
        parser.add_argument("--json", action="store_true", help="print one JSON object (the default output too)")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"No organisation has the ID {options['org']!r}.")
        if not options["departments"] and not options["users"]:
            raise CommandError("Give --departments FILE, --users FILE or both.")
        files: dict[str, bytes | None] = {}
        for kind in ("departments", "users"):
            path: Path | None = options[kind]
            if path is None:
                files[kind] = None
                continue
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    files[kind] = b"x" * (MAX_FILE_BYTES + 1)  # reported as too large by the reader
                else:
                    files[kind] = path.read_bytes()
            except OSError as exc:
                raise CommandError(f"Cannot read {path}: {exc.strerror}") from None
        run = import_plan if options["dry_run"] else import_apply
        plan = run(
            organization=organization,
            departments_raw=files["departments"],
            users_raw=files["users"],
            full_sync=options["full_sync"],
        )
        applied = not options["dry_run"] and not plan.faults
        report = plan.report(applied=applied)
        report.pop("lists", None)
        self.stdout.write(json.dumps(report, ensure_ascii=False))
        if plan.faults:
            sys.exit(1)
