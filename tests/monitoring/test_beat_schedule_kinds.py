"""Real beats: solar schedules fire, a run one-off is disabled, and one bad row never stops beat."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule

from common.monitoring.models import ScheduleFault
from common.monitoring.services.status import build_status_report
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def sent(name: str) -> int:
    """Slots beat dispatched for `name`: the leader writes each one's run count before it publishes."""
    return PeriodicTask.objects.get(name=name).total_run_count


def test_a_solar_schedule_fires_through_a_real_beat(start_beat):
    # Sunset at 0°N 0°E happens every day; the last run three days ago means one sunset is overdue now.
    sunset, _ = SolarSchedule.objects.get_or_create(event="sunset", latitude=0, longitude=0)
    PeriodicTask.objects.create(
        name="at-sunset", task="common.tasks.heartbeat", solar=sunset, last_run_at=timezone.now() - timedelta(days=3)
    )
    start_beat()
    wait_until(lambda: sent("at-sunset") >= 1, 60, "beat to send the solar task")
    row = PeriodicTask.objects.get(name="at-sunset")
    assert row.total_run_count == 1 and row.last_run_at > timezone.now() - timedelta(minutes=2)
    assert row.enabled


def test_a_one_off_clocked_task_runs_once_and_is_disabled(start_beat):
    clock = ClockedSchedule.objects.create(clocked_time=timezone.now() - timedelta(seconds=1))
    PeriodicTask.objects.create(name="once", task="common.tasks.heartbeat", clocked=clock, one_off=True)
    start_beat()
    wait_until(lambda: sent("once") >= 1, 60, "beat to send the one-off task")
    wait_until(lambda: not PeriodicTask.objects.get(name="once").enabled, 30, "the one-off task to be disabled")
    assert sent("once") == 1


def test_bad_rows_are_disabled_with_the_reason_and_every_other_schedule_keeps_running(start_beat):
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="good", task="common.tasks.heartbeat", interval=every)
    PeriodicTask.objects.create(name="unknown-task", task="nowhere.tasks.missing", interval=every)
    bad_cron = CrontabSchedule.objects.create(minute="99", hour="*")
    PeriodicTask.objects.create(name="bad-crontab", task="common.tasks.heartbeat", crontab=bad_cron)
    bad_solar, _ = SolarSchedule.objects.get_or_create(event="moonrise", latitude=0, longitude=0)
    PeriodicTask.objects.create(name="bad-solar", task="common.tasks.heartbeat", solar=bad_solar)

    start_beat()
    wait_until(lambda: sent("good") >= 3, 60, "the good schedule to keep running")
    for name in ("unknown-task", "bad-crontab", "bad-solar"):
        assert not PeriodicTask.objects.get(name=name).enabled, name
        assert sent(name) == 0, name
    reasons = dict(ScheduleFault.objects.values_list("name", "reason"))
    assert "unknown task 'nowhere.tasks.missing'" in reasons["unknown-task"]
    assert reasons["bad-crontab"].startswith("schedule cannot be built: ValueError")
    assert reasons["bad-solar"].startswith("schedule cannot be built: ValueError")
    alarms = [a for a in build_status_report()["alarms"] if a["code"] == "SCHEDULE_DISABLED"]
    assert sorted(a["message"].split()[2] for a in alarms) == ["bad-crontab", "bad-solar", "unknown-task"]

    # Re-enabled by an operator once fixed: runs, and the alarm is gone.
    PeriodicTask.objects.filter(name="unknown-task").update(task="common.tasks.heartbeat", enabled=True)
    PeriodicTask.objects.get(name="unknown-task").save()  # bumps the change marker beat watches
    wait_until(lambda: sent("unknown-task") >= 1, 60, "the fixed task to run")
    assert [a for a in build_status_report()["alarms"] if "unknown-task" in a["message"]] == []
