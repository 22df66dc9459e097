"""In-process checks: the beat guard fails closed, reconciliation respects operators, heartbeat task counts."""

from __future__ import annotations

import pytest
from celery import signals
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from boot.celery import app as celery_app
from common.monitoring.models import SettingsScheduleEntry
from common.monitoring.services import beat_leadership
from common.monitoring.services.schedule_reconciliation import reconcile_settings_schedules


def test_a_beat_whose_guard_cannot_be_installed_exits_instead_of_dispatching(monkeypatch):
    def broken(**_kwargs):
        raise RuntimeError("cannot reach the lock database")

    monkeypatch.setattr(beat_leadership, "install_beat_leadership", broken)
    # Celery's Signal.send swallows an Exception from a receiver; SystemExit must get through and end beat.
    with pytest.raises(SystemExit, match="beat leadership guard could not be installed"):
        signals.beat_init.send(sender=object())


@pytest.mark.django_db
def test_entry_an_operator_disabled_stays_disabled_when_it_leaves_settings_and_returns():
    hourly = IntervalSchedule.objects.create(every=3600, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="nightly", task="common.tasks.heartbeat", interval=hourly, enabled=False)
    SettingsScheduleEntry.objects.create(name="nightly", last_seen_in_settings="2020-01-01T00:00Z")

    gone = reconcile_settings_schedules(names=set())
    back = reconcile_settings_schedules(names={"nightly"})

    assert gone["disabled"] == [] and back["enabled"] == []
    assert PeriodicTask.objects.get(name="nightly").enabled is False


@pytest.mark.django_db
def test_entry_reconciliation_disabled_is_enabled_again_when_it_returns_to_settings():
    hourly = IntervalSchedule.objects.create(every=3600, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="nightly", task="common.tasks.heartbeat", interval=hourly)
    SettingsScheduleEntry.objects.create(name="nightly", last_seen_in_settings="2020-01-01T00:00Z")

    assert reconcile_settings_schedules(names=set())["disabled"] == ["nightly"]
    assert PeriodicTask.objects.get(name="nightly").enabled is False
    assert reconcile_settings_schedules(names={"nightly"})["enabled"] == ["nightly"]
    assert PeriodicTask.objects.get(name="nightly").enabled is True


@pytest.mark.django_db(transaction=True)  # the scheduler closes connections that are inside a transaction
def test_beat_start_keeps_a_settings_entry_the_operator_disabled_disabled():
    # What django-celery-beat does at each beat start: write CELERY_BEAT_SCHEDULE into its table.
    DatabaseScheduler(app=celery_app, lazy=True).setup_schedule()
    PeriodicTask.objects.filter(name="cleanup-task-results").update(enabled=False)

    DatabaseScheduler(app=celery_app, lazy=True).setup_schedule()  # the next start
    reconcile_settings_schedules(names=set(celery_app.conf.beat_schedule))

    assert PeriodicTask.objects.get(name="cleanup-task-results").enabled is False


def test_heartbeat_tasks_done_counts_finished_tasks_not_running_ones():
    from celery.worker import state

    from common.monitoring.signals import tasks_finished

    class Request:  # the two attributes Celery's worker state reads from its Request
        def __init__(self, task_id):
            self.id, self.name = task_id, "common.tasks.heartbeat"

    before = tasks_finished()
    running, finished = Request("running"), Request("finished")
    state.task_accepted(running)
    state.task_accepted(finished)
    state.task_ready(finished)
    try:
        assert tasks_finished() == before + 1
    finally:
        state.task_ready(running)
    assert tasks_finished() == before + 2
