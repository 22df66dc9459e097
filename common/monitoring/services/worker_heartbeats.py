"""Worker heartbeats in the database: the status screen reads them there, whether or not remote control answers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from common.monitoring.models import WorkerHeartbeat

logger = logging.getLogger(__name__)


def record_worker_started(*, hostname: str, pid: int, queues: list[str]) -> WorkerHeartbeat:
    """Create or replace the heartbeat row of node `hostname` (a restarted node reuses its row)."""
    now = timezone.now()
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        defaults={
            "pid": pid,
            "queues": sorted(queues),
            "started_at": now,
            "last_seen": now,
            "tasks_done": 0,
            "stopped_at": None,
        },
    )
    WorkerHeartbeat.objects.filter(last_seen__lt=now - timedelta(seconds=settings.MONITORING_RETENTION)).delete()
    return heartbeat


def record_worker_alive(*, hostname: str, pid: int, tasks_done: int) -> bool:
    """Refresh last_seen and tasks_done of this worker; return False if its row was taken by another process."""
    updated = WorkerHeartbeat.objects.filter(hostname=hostname, pid=pid).update(
        last_seen=timezone.now(), tasks_done=tasks_done, stopped_at=None
    )
    return updated == 1


def record_worker_stopped(*, hostname: str, pid: int, tasks_done: int) -> None:
    """Mark a cleanly stopped worker, so it shows as stopped rather than stale."""
    now = timezone.now()
    WorkerHeartbeat.objects.filter(hostname=hostname, pid=pid).update(
        last_seen=now, stopped_at=now, tasks_done=tasks_done
    )


class HeartbeatThread(threading.Thread):
    """Refreshes a worker's row every MONITORING_HEARTBEAT_INTERVAL, off the consumer's event loop.

    A thread (not the worker's timer) so that a slow or unreachable database
    never blocks message consumption.
    """

    def __init__(self, *, hostname: str, pid: int, queues: list[str], tasks_done: Callable[[], int]) -> None:
        super().__init__(name="doorito-heartbeat", daemon=True)
        self.hostname, self.pid, self.queues, self.tasks_done = hostname, pid, queues, tasks_done
        self.stopping = threading.Event()
        self._registered = False

    def run(self) -> None:
        while not self.stopping.is_set():
            self.beat_once()
            self.stopping.wait(settings.MONITORING_HEARTBEAT_INTERVAL)

    def beat_once(self) -> None:
        try:
            close_old_connections()
            if not self._registered:
                record_worker_started(hostname=self.hostname, pid=self.pid, queues=self.queues)
                self._registered = True
            elif not record_worker_alive(hostname=self.hostname, pid=self.pid, tasks_done=self.tasks_done()):
                self._registered = False  # someone replaced our row: register again next time
        except Exception as exc:  # the database may be down: report and try again next interval
            logger.warning(
                "worker heartbeat failed: %s", exc, extra={"event": "worker.heartbeat_failed", "error": str(exc)}
            )
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        try:
            close_old_connections()
            record_worker_stopped(hostname=self.hostname, pid=self.pid, tasks_done=self.tasks_done())
        except Exception as exc:  # shutting down during an outage: the row goes stale, which is honest
            logger.warning("worker stop not recorded: %s", exc)
        finally:
            connection.close()
