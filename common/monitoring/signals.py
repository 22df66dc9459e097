"""Celery signal receivers: worker heartbeats, beat leadership and reconciliation, task logging."""

from __future__ import annotations

import logging
import os

from celery import signals
from django.conf import settings

from common.monitoring import task_logging  # noqa: F401 - connects the task log receivers

if settings.LOG_FORMAT == "json":
    from common.monitoring.json_logging import configure_json_logging

    # Warnings (e.g. Celery's SecurityWarning) become log records, hence JSON too.
    logging.captureWarnings(True)
    signals.setup_logging.connect(configure_json_logging, weak=False)

_heartbeat = None


@signals.worker_ready.connect
def _start_worker_heartbeat(sender=None, **_kwargs) -> None:
    global _heartbeat
    if _heartbeat is not None:  # worker_ready fires again after a broker reconnect
        return
    from celery.worker import state

    from common.monitoring.services.worker_heartbeats import HeartbeatThread

    _heartbeat = HeartbeatThread(
        hostname=sender.hostname,
        pid=os.getpid(),
        queues=list(sender.app.amqp.queues.consume_from),
        tasks_done=lambda: sum(state.total_count.values()),
    )
    _heartbeat.start()


@signals.worker_shutdown.connect
def _stop_worker_heartbeat(sender=None, **_kwargs) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


@signals.beat_init.connect
def _guard_beat(sender=None, **_kwargs) -> None:
    from common.monitoring.services.beat_leadership import install_beat_leadership
    from common.monitoring.services.schedule_reconciliation import reconcile_settings_schedules

    app = sender.app
    names = set(app.conf.beat_schedule)
    if app.conf.result_expires:
        names.add("celery.backend_cleanup")  # django-celery-beat installs it at every start
    reconcile_settings_schedules(names=names)
    install_beat_leadership(service=sender)
