"""manage.py jma_replay --org SLUG FILE… [--json] [--drill-mode on|off]: what the organisation's current rules
and directory would do with these JMA files, in order. A simulation: nothing is stored and nothing is sent;
each file sees the state left by the files before it in this run, and no state from earlier runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from directory.models import Organization
from safety.autodispatch import replay
from safety.jma.parser import JmaParseError


class Command(BaseCommand):
    help = "Replay JMA XML files against an organisation's automatic-dispatch rules, sending nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE")
        parser.add_argument("--org", required=True, metavar="SLUG", help="The organisation ID (slug).")
        parser.add_argument("--json", action="store_true", help="One JSON object per file, one per line.")
        parser.add_argument(
            "--drill-mode",
            choices=("on", "off"),
            default=None,
            help="Override the organisation's drill mode for this run (default: its setting).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"no organisation with the ID {options['org']!r}")
        documents: list[tuple[str, bytes]] = []
        for name in options["files"]:
            try:
                documents.append((name, Path(name).read_bytes()))
            except OSError as exc:
                raise CommandError(f"{name}: {exc.strerror or exc}") from None
        drill = None if options["drill_mode"] is None else options["drill_mode"] == "on"
        try:
            lines = replay(organization, documents, drill_mode=drill)
        except JmaParseError as exc:
            raise CommandError(str(exc)) from None
        for line, _outcome in lines:
            if options["json"]:
                self.stdout.write(json.dumps(line, ensure_ascii=False))
            else:
                targets = f" +{len(line['new_targets'])}" if line["new_targets"] else ""
                gone = f" -{len(line['withdrawn_targets'])}" if line["withdrawn_targets"] else ""
                drill_mark = " [drill]" if line["drill"] else ""
                what = f"{line['decision']} {line['hazard'] or '-'}{drill_mark}{targets}{gone}"
                self.stdout.write(f"{line['file']}: {what}: {line['reason']}")
