"""Delete rows the stock kombu transport consumed; make expired in-flight rows deliverable again."""

from typing import Any

from django.core.management.base import BaseCommand

from common.broker.services.cleanup import cleanup_broker_messages


class Command(BaseCommand):
    help = (
        "Clean kombu_message: delete stale rows left by the stock transport, restore expired leases, "
        "prune spent cancel marks, drop the queues of consumers that are gone (replies, events, remote control)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = cleanup_broker_messages()
        self.stdout.write(
            f"deleted {result.stale_deleted} stale row(s), restored {result.expired_restored} expired row(s), "
            f"pruned {result.cancel_marks_pruned} cancel mark(s), "
            f"dropped {result.dead_queues_dropped} dead consumer queue(s) and {result.broadcasts_deleted} message(s)"
        )
