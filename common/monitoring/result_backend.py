"""django-celery-results' database backend with a cleanup that deletes in short batches.

django-celery-results 2.6 deletes every expired row in one transaction: on a
large table that holds locks and bloats WAL for minutes. `celery.backend_cleanup`
calls `backend.cleanup()`, so overriding it here batches the beat-scheduled cleanup.
"""

from __future__ import annotations

from django_celery_results.backends.database import DatabaseBackend

from common.monitoring.services.result_cleanup import delete_expired_results


class BatchedCleanupDatabaseBackend(DatabaseBackend):
    """The `django-db` backend; cleanup() deletes expired results RESULT_CLEANUP_BATCH_SIZE rows at a time."""

    def cleanup(self) -> None:
        if not self.expires:
            return
        delete_expired_results(expires_seconds=self.expires)
