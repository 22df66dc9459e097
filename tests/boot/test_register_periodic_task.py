"""register_periodic_task: one row per name, updated in place, callable from a post_migrate handler."""

from __future__ import annotations

import pytest
from celery.schedules import crontab
from django.core.management import call_command
from django.db.models.signals import post_migrate
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from common.periodic_tasks import register_periodic_task

pytestmark = pytest.mark.django_db


def test_a_second_call_with_a_new_interval_updates_the_row_instead_of_adding_one():
    first = register_periodic_task(name="sync-partners", task="common.tasks.heartbeat", every=300)
    again = register_periodic_task(name="sync-partners", task="common.tasks.heartbeat", every=600, queue="high")
    assert PeriodicTask.objects.filter(name="sync-partners").count() == 1
    row = PeriodicTask.objects.get(name="sync-partners")
    assert first.pk == again.pk == row.pk
    assert (row.interval.every, row.interval.period, row.queue) == (600, IntervalSchedule.SECONDS, "high")

    hourly = register_periodic_task(name="sync-partners", task="common.tasks.heartbeat", crontab=crontab(minute=0))
    row = PeriodicTask.objects.get(pk=hourly.pk)
    assert row.interval is None and row.crontab.minute == "0" and row.crontab.hour == "*"
    assert PeriodicTask.objects.filter(name="sync-partners").count() == 1


def test_an_operator_disabling_survives_registration_but_enabled_false_disables():
    register_periodic_task(name="nightly", task="common.tasks.heartbeat", every=1, period=IntervalSchedule.DAYS)
    PeriodicTask.objects.filter(name="nightly").update(enabled=False)
    assert (
        register_periodic_task(name="nightly", task="common.tasks.heartbeat", every=1, period="days").enabled is False
    )
    register_periodic_task(name="paused", task="common.tasks.heartbeat", every=60)
    assert (
        register_periodic_task(name="paused", task="common.tasks.heartbeat", every=60, enabled=False).enabled is False
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of every="),
        ({"every": 5, "crontab": crontab()}, "exactly one of every="),
        ({"every": 0}, "every= must be"),
        ({"every": 5, "period": "fortnights"}, "period= must be one of"),
        ({"crontab": crontab(), "period": "days"}, "period= goes with every="),
        ({"crontab": "0 * * * *"}, "celery.schedules.crontab"),
    ],
)
def test_bad_arguments_are_refused_and_nothing_is_written(kwargs, message):
    with pytest.raises(ValueError, match=message):
        register_periodic_task(name="bad", task="common.tasks.heartbeat", **kwargs)
    assert not PeriodicTask.objects.filter(name="bad").exists()


def test_a_post_migrate_handler_registers_it_at_migrate():
    def register(**_kwargs):
        register_periodic_task(name="from-post-migrate", task="common.tasks.heartbeat", every=90)

    post_migrate.connect(register, weak=False, dispatch_uid="test-register")
    try:
        call_command("migrate", verbosity=0)
        call_command("migrate", verbosity=0)  # every migrate runs it again: still one row
    finally:
        post_migrate.disconnect(dispatch_uid="test-register")
    assert PeriodicTask.objects.filter(name="from-post-migrate").count() == 1
