"""`manage.py jma_inspect FILE…`: parse JMA XML files and print one JSON object per line — a stable interface.

Each line has exactly the keys of `Report.inspect_dict` (file, title, status, info_type, event_ids, serial, kind,
max_intensity, intensity_by_pref, intensity_by_area, tsunami_by_area, special_by_area). A file that cannot be read
or parsed prints {"file": …, "error": "<reason>"}; every file is still printed, then the command exits 1.
Touches no database.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from safety.jma.parser import MAX_DOCUMENT_BYTES, JmaParseError, parse_report


def inspect_file(path: str) -> dict[str, Any]:
    """The jma_inspect line for one file: the report's inspect_dict, or {"file", "error"} with the reason."""
    try:
        with Path(path).open("rb") as fh:
            raw = fh.read(MAX_DOCUMENT_BYTES + 1)  # never read a huge file whole: one byte over is enough to refuse
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        return {"file": path, "error": f"cannot read the file: {exc.strerror or exc}"}
    if len(raw) > MAX_DOCUMENT_BYTES:
        return {
            "file": path,
            "error": f"the document is too large: {size} bytes, the limit is {MAX_DOCUMENT_BYTES} bytes",
        }
    try:
        return parse_report(raw).inspect_dict(path)
    except JmaParseError as exc:
        return {"file": path, "error": str(exc)}


class Command(BaseCommand):
    help = "Parse JMA 防災情報XML files and print one JSON object per line (exit 1 if any file fails)."
    requires_system_checks: list[str] = []  # a read-only tool; it must run even while the project is mid-setup
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE", help="JMA XML files to inspect")

    def handle(self, *args: Any, **options: Any) -> None:
        failed = False
        for path in options["files"]:
            line = inspect_file(str(path))
            failed = failed or "error" in line
            self.stdout.write(json.dumps(line, ensure_ascii=False))
        self.stdout.flush()
        if failed:
            sys.exit(1)
