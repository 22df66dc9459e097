"""Cancel queued Celery tasks by id (the SQL transport cannot broadcast `revoke`)."""

from django.core.management.base import BaseCommand

from common.broker.services.cancel import CancelOutcome, cancel_queued_task


class Command(BaseCommand):
    help = "Delete the queued message of each task id so it never runs; claimed (running) tasks are reported."

    def add_arguments(self, parser):
        parser.add_argument("task_ids", nargs="+", metavar="TASK_ID")

    def handle(self, *args, task_ids, **options):
        for task_id in task_ids:
            outcome = cancel_queued_task(task_id=task_id)
            style = self.style.SUCCESS if outcome is CancelOutcome.CANCELLED else self.style.WARNING
            self.stdout.write(style(f"{task_id}: {outcome.value}"))
