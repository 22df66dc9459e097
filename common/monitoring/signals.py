"""Celery signal receivers: worker heartbeats, beat leadership and reconciliation, task logging."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, signals
from django.db import close_old_connections

from common.monitoring import task_logging  # noqa: F401 - connects the task log receivers
from common.monitoring.celery_logging import configure_celery_logging
from common.monitoring.services.queue_coverage import unconsumed_queues
from common.monitoring.services.schedule_guard import install_schedule_guard

# Warnings (e.g. Celery's SecurityWarning) become log records, rendered in LOG_FORMAT too.
logging.captureWarnings(True)
signals.setup_logging.connect(configure_celery_logging, weak=False)

logger = logging.getLogger(__name__)

# Before any beat builds its scheduler (which reads every row at construction, before beat_init).
install_schedule_guard()

_heartbeat = None


def tasks_finished() -> int:
    """Tasks this worker process has finished (succeeded, failed or retried), not merely accepted."""
    from celery.worker import state

    # total_count counts tasks when accepted; those still running are not done yet.
    return max(0, sum(state.total_count.values()) - len(state.active_requests))


@signals.worker_ready.connect
def _start_worker_heartbeat(sender: Any = None, **_kwargs: Any) -> None:
    global _heartbeat
    if _heartbeat is not None:  # worker_ready fires again after a broker reconnect
        return
    from common.monitoring.services.worker_heartbeats import HeartbeatThread

    _heartbeat = HeartbeatThread(
        hostname=sender.hostname,
        pid=os.getpid(),
        queues=list(sender.app.amqp.queues.consume_from),
        tasks_done=tasks_finished,
    )
    _heartbeat.start()


@signals.worker_ready.connect
def _say_what_is_not_consumed(sender: Any = None, **_kwargs: Any) -> None:
    # At ready, every app's tasks are registered and -Q is applied.
    consumed = list(sender.app.amqp.queues.consume_from)
    for queue, tasks in unconsumed_queues(app=sender.app, consumed=consumed).items():
        logger.warning(
            "this worker does not consume queue %r (it consumes %s): %s wait there for a worker started with -Q %s",
            queue,
            ",".join(consumed),
            ", ".join(tasks),
            queue,
            extra={"event": "worker.queue_not_consumed", "queue": queue, "tasks": tasks, "consumed": consumed},
        )


@signals.worker_shutdown.connect
def _stop_worker_heartbeat(sender: Any = None, **_kwargs: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


@signals.beat_init.connect
def _guard_beat(sender: Any = None, **_kwargs: Any) -> None:
    # Celery's Signal.send logs and swallows a receiver's Exception, so an unguarded beat would carry on
    # and dispatch next to the leader. Fail closed: SystemExit is not an Exception, so it ends the process.
    try:
        from common.monitoring.services.beat_leadership import install_beat_leadership

        install_beat_leadership(service=sender, on_leadership=lambda: _reconcile_schedules(sender.app))
    except Exception as exc:
        logger.critical(
            "beat leadership guard could not be installed; exiting rather than dispatching unguarded: %r",
            exc,
            exc_info=True,
            extra={"event": "beat.guard_failed"},
        )
        raise SystemExit(f"beat leadership guard could not be installed: {exc!r}") from exc


def _reconcile_schedules(app: Celery) -> None:
    # Only the leader reconciles (an old-version standby during a rolling deploy must not undo the new
    # version's schedule), and a failure here must never stop dispatching: log it and carry on.
    from common.monitoring.services.schedule_reconciliation import reconcile_settings_schedules

    names = set(app.conf.beat_schedule)
    try:
        reconcile_settings_schedules(names=names)
    except Exception as exc:
        logger.exception(
            "beat schedule reconciliation failed; dispatching the schedule as it is: %r",
            exc,
            extra={"event": "beat.reconcile_failed", "error": str(exc)},
        )
        close_old_connections()
