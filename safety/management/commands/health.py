"""manage.py health: whether the system would send a safety check right now, and what is behind if not. Exits 1
when any check fails, so a monitoring agent (cron, Zabbix, a Kubernetes probe) can alert on it; --json prints one
object for a collector. docs/operations.md says what each check means and what to do."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from safety.health import FAIL, OK, WARN, health_report, worst


class Command(BaseCommand):
    help = "Check the database, Redis, beat, the outbox, sends, automatic dispatch, the JMA feeds and push failures."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        checks = health_report()
        status = worst(checks)
        if options["json"]:
            self.stdout.write(
                json.dumps({"status": status, "checks": [c.as_dict() for c in checks]}, ensure_ascii=False)
            )
        else:
            marks = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL"}
            for check in checks:
                self.stdout.write(f"{marks[check.status]}  {check.name}: {check.detail}")
            self.stdout.write(f"overall: {status}")
        if status == FAIL:
            raise SystemExit(1)
