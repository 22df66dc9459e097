"""Show, per broker queue, how many messages are ready and claimed and how old the oldest ready one is."""

from typing import Any

from django.core.management.base import BaseCommand

from common.broker.services.inspection import queue_stats, stale_row_count


class Command(BaseCommand):
    help = "Per queue: ready and claimed (in-flight) messages in kombu_message and the oldest ready message's age."

    def handle(self, *args: Any, **options: Any) -> None:
        stats = queue_stats()
        header = f"{'queue':<24} {'ready':>8} {'claimed':>8} {'oldest ready':>14}"
        self.stdout.write(header)
        for row in stats:
            age = row["oldest_ready_age_seconds"]
            age_text = "-" if age is None else f"{age:.1f}s"
            self.stdout.write(f"{row['queue']:<24} {row['ready']:>8} {row['claimed']:>8} {age_text:>14}")
        if not stats:
            self.stdout.write("(no queues yet)")
        stale = stale_row_count()
        if stale:
            self.stdout.write(
                f"{stale} consumed row(s) left by the stock kombu transport: run `manage.py broker_cleanup`."
            )
