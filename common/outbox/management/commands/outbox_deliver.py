"""Deliver due webhooks from this process, without a worker (draining by hand, tests, benchmarks)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.outbox.services.delivery.dispatcher import deliver_due


class Command(BaseCommand):
    help = "Deliver due webhook deliveries in this process; with --drain, until none are due."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=int, default=500, help="deliveries per round (default 500)")
        parser.add_argument("--drain", action="store_true", help="repeat until nothing is due")

    def handle(self, *args: Any, batch: int, drain: bool, **options: Any) -> None:
        if batch < 1:
            raise CommandError(f"--batch must be at least 1, got {batch}")
        totals = {"processed": 0, "delivered": 0, "failed": 0}
        while True:
            result = deliver_due(limit=batch, time_budget=60)
            for key in totals:
                totals[key] += result[key]
            if not drain or not result["processed"]:
                break
        self.stdout.write(json.dumps({**totals, "remaining": result["remaining"]}))
