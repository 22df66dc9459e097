"""Print the outbox's health: deliveries by status, oldest pending age, failing endpoints."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from common.outbox.services.health import get_outbox_health


class Command(BaseCommand):
    help = "Print outbox health: counts by status, oldest pending and oldest due ages, and the failing endpoints."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        health = get_outbox_health()
        if options["json"]:
            self.stdout.write(json.dumps(health, indent=2))
            return
        counts = ", ".join(f"{status} {n}" for status, n in health["deliveries"].items())
        self.stdout.write(f"deliveries: {counts} (due now {health['due']}, in flight {health['in_flight']})")
        age = health["oldest_pending_age_seconds"]
        self.stdout.write("oldest pending: " + ("none" if age is None else f"{age:.0f}s"))
        due_age = health["oldest_due_age_seconds"]
        self.stdout.write(
            "oldest due (not yet picked up by a dispatcher): " + ("none" if due_age is None else f"{due_age:.0f}s")
        )
        if not health["failing_endpoints"]:
            self.stdout.write("failing endpoints: none")
        for endpoint in health["failing_endpoints"]:
            state = "active" if endpoint["is_active"] else f"DISABLED ({endpoint['disabled_reason']})"
            self.stdout.write(
                f"endpoint {endpoint['id']} {endpoint['url']}: {state}, failing since {endpoint['failing_since']}, "
                f"{endpoint['pending']} pending, {endpoint['failed']} failed"
            )
