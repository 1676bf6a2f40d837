"""manage.py jma_ingest FILE…: store JMA XML files as if they had arrived from the feed (drills, replays)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from safety.jma.ingest import jma_document_ingest_result
from safety.models import JmaSource


class Command(BaseCommand):
    help = "Ingest JMA XML files (source 'file', keyed by file:<absolute path> unless --url is given)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE")
        parser.add_argument("--url", default="", help="The document URL to store a single file under.")

    def handle(self, *args: Any, **options: Any) -> None:
        files: list[str] = options["files"]
        url_option: str = options["url"].strip()
        if url_option and len(files) != 1:
            raise CommandError("--url needs exactly one FILE")
        failed = 0
        for name in files:
            path = Path(name)
            try:
                url = url_option or f"file:{path.resolve()}"
                raw = path.read_bytes()
                result = jma_document_ingest_result(url=url, raw=raw, source=JmaSource.FILE)
            except Exception as exc:  # report every file, then fail the run
                failed += 1
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self.stdout.write(f"{name}: error: {reason}")
                continue
            doc = result.document
            state = "stored" if result.created else "already stored"
            self.stdout.write(f"{name}: {state} #{doc.id} {doc.title} [{doc.kind}/{doc.status}/{doc.info_type}]")
        if failed:
            raise SystemExit(1)
