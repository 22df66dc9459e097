"""Cancel Celery tasks by id (the SQL transport cannot broadcast `revoke`)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.broker.services.cancel import CancelOutcome, cancel_queued_task


class Command(BaseCommand):
    help = (
        "Make sure each task id does not start: a queued message is deleted (cancelled); one a worker already "
        "claimed (ETA/countdown, prefetched) is marked and skipped (claimed); a task already running finishes. "
        "Exits 1 if any id was not found."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("task_ids", nargs="+", metavar="TASK_ID")

    def handle(self, *args: Any, task_ids: list[str], **options: Any) -> None:
        if any(not task_id.strip() for task_id in task_ids):
            raise CommandError("TASK_ID must not be empty or blank")
        missing = []
        for task_id in task_ids:
            outcome = cancel_queued_task(task_id=task_id)
            style = self.style.WARNING if outcome is CancelOutcome.NOT_FOUND else self.style.SUCCESS
            self.stdout.write(style(f"{task_id.strip()}: {outcome.value}"))
            if outcome is CancelOutcome.NOT_FOUND:
                missing.append(task_id.strip())
        if missing:
            raise CommandError(f"no queued or claimed message for: {', '.join(missing)}")
