"""Upgrading to the reference's beat names: nothing runs twice, nothing is lost, old names do not linger."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from boot.celery import app as celery_app
from common.monitoring.models import SettingsScheduleEntry
from common.monitoring.services.schedule_reconciliation import RENAMED_SCHEDULES, reconcile_settings_schedules
from tests.processes import wait_until

REFERENCE_NAMES = {
    "cleanup-expired-upload-files",
    "deliver-outbox-events-sweep",
    "cleanup-delivered-outbox-events",
    "notify-expiring-files",
    "cleanup-broker-messages",
    "cleanup-task-results",
}


def old_layout_rows(*, last_run_at):
    """The periodic tasks an older Doorito left: its names, tracked as settings entries, one disabled by hand."""
    hourly, _ = IntervalSchedule.objects.get_or_create(every=3600, period=IntervalSchedule.SECONDS)
    for old, new in RENAMED_SCHEDULES.items():
        task = celery_app.conf.beat_schedule[new]["task"]
        PeriodicTask.objects.create(
            name=old, task=task, interval=hourly, last_run_at=last_run_at, total_run_count=7, enabled=True
        )
        SettingsScheduleEntry.objects.create(name=old, last_seen_in_settings=last_run_at)
    PeriodicTask.objects.filter(name="broker-cleanup").update(enabled=False)  # an operator's choice


def test_the_defaults_use_the_reference_names_and_schedules():
    schedule = celery_app.conf.beat_schedule
    assert set(schedule) == REFERENCE_NAMES
    cleanup = schedule["cleanup-expired-upload-files"]["schedule"]
    assert (cleanup.minute, cleanup.hour) == ({0}, {0, 6, 12, 18})
    outbox_cleanup = schedule["cleanup-delivered-outbox-events"]["schedule"]
    assert (outbox_cleanup.minute, outbox_cleanup.hour) == ({30}, {0, 6, 12, 18})
    notify = schedule["notify-expiring-files"]["schedule"]
    assert (notify.minute, notify.hour) == ({0}, set(range(24)))
    assert schedule["deliver-outbox-events-sweep"]["schedule"] == 300.0


@pytest.mark.django_db(transaction=True)  # the scheduler closes connections that are inside a transaction
def test_renamed_entries_keep_their_last_run_and_old_names_are_gone():
    ran_at = timezone.now() - timedelta(minutes=10)
    old_layout_rows(last_run_at=ran_at)
    celery_app.loader.import_default_modules()  # as beat does before it builds its scheduler
    DatabaseScheduler(app=celery_app, lazy=True).setup_schedule()  # what beat does first: writes the new names

    report = reconcile_settings_schedules(names=set(celery_app.conf.beat_schedule))

    assert report["renamed"] == sorted(RENAMED_SCHEDULES)
    assert not PeriodicTask.objects.filter(name__in=RENAMED_SCHEDULES).exists()
    for new in REFERENCE_NAMES - {"cleanup-broker-messages"}:
        row = PeriodicTask.objects.get(name=new)
        assert (row.last_run_at, row.total_run_count, row.enabled) == (ran_at, 7, True), new
    # Disabled by the operator under its old name, so under its new one too (and django-celery-beat
    # clears the last run of a disabled task, so re-enabling it starts afresh).
    assert PeriodicTask.objects.get(name="cleanup-broker-messages").enabled is False
    assert not SettingsScheduleEntry.objects.filter(name__in=RENAMED_SCHEDULES).exists()
    # The next start changes nothing, even though django-celery-beat writes its celery.backend_cleanup again.
    DatabaseScheduler(app=celery_app, lazy=True).setup_schedule()
    again = reconcile_settings_schedules(names=set(celery_app.conf.beat_schedule))
    assert PeriodicTask.objects.get(name="cleanup-task-results").last_run_at == ran_at
    assert not PeriodicTask.objects.filter(name="celery.backend_cleanup").exists()
    assert again["renamed"] == ["celery.backend_cleanup"] and again["disabled"] == []


@pytest.mark.integration
def test_a_real_beat_upgrades_the_names_without_sending_a_slot_twice(start_beat):
    ran_at = timezone.now() - timedelta(seconds=5)
    old_layout_rows(last_run_at=ran_at)
    beat = start_beat(OUTBOX_SWEEP_INTERVAL_SECONDS="3600", BROKER_CLEANUP_INTERVAL="3600")
    wait_until(lambda: not PeriodicTask.objects.filter(name__in=RENAMED_SCHEDULES).exists(), 60, "old names gone")
    assert PeriodicTask.objects.get(name="deliver-outbox-events-sweep").last_run_at == ran_at
    assert not PeriodicTask.objects.get(name="cleanup-broker-messages").enabled
    # Every entry ran 5 s ago under its old name: no name sends it again now (each slot adds one to the count).
    time.sleep(3)
    counts = dict(PeriodicTask.objects.filter(name__in=REFERENCE_NAMES).values_list("name", "total_run_count"))
    assert counts == dict.fromkeys(REFERENCE_NAMES, 7), counts
    assert beat.popen.poll() is None
