"""Replay an endpoint's failed deliveries whose events fall in a time window."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from common.outbox.models import WebhookEndpoint
from common.outbox.services.replay import replay_failed_for_endpoint

# Ten years: far beyond any retention, and small enough that now - hours is a valid date-time.
MAX_HOURS = 10 * 366 * 24


def _when(value: str, name: str) -> datetime:
    try:
        parsed = parse_datetime(value)
    except ValueError as exc:  # well-formed but impossible, e.g. month 13
        raise CommandError(f"{name}: not a valid date-time: {value!r} ({exc})") from None
    if parsed is None:
        raise CommandError(f"{name}: not an ISO 8601 date-time: {value!r} (e.g. 2026-01-31T12:00:00Z)")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


class Command(BaseCommand):
    help = "Replay an endpoint's failed webhook deliveries (same webhook-id) for events created in a time window."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("endpoint_id", type=int)
        window = parser.add_mutually_exclusive_group(required=True)
        window.add_argument("--hours", type=float, help="events created in the last N hours")
        window.add_argument("--since", help="events created at or after this ISO 8601 time")
        parser.add_argument("--until", help="events created before this ISO 8601 time (with --since)")

    def handle(
        self,
        *args: Any,
        endpoint_id: int,
        hours: float | None,
        since: str | None,
        until: str | None,
        **options: Any,
    ) -> None:
        if until is not None and since is None:
            raise CommandError("--until needs --since (with --hours the window always ends now)")
        if hours is not None:
            if not math.isfinite(hours) or hours <= 0:
                raise CommandError(f"--hours must be positive and finite, got {hours}")
            if hours > MAX_HOURS:
                raise CommandError(f"--hours must be at most {MAX_HOURS} (ten years), got {hours:g}")
            start, end = timezone.now() - timedelta(hours=hours), None
        else:
            assert since is not None  # argparse: --hours or --since is required
            start, end = _when(since, "--since"), _when(until, "--until") if until else None
        endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
        if endpoint is None:
            raise CommandError(f"no webhook endpoint with id {endpoint_id}")
        if not endpoint.is_active:
            raise CommandError(f"endpoint {endpoint_id} is disabled ({endpoint.disabled_reason}); re-enable it first")
        try:
            count = replay_failed_for_endpoint(endpoint_id=endpoint_id, since=start, until=end)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"replaying {count} failed deliveries to {endpoint.url}")
