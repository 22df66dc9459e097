"""Two real beats, one real worker: only the lock holder dispatches, and kill -9 hands over without a double slot."""

from __future__ import annotations

import itertools
import re
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from common.monitoring.models import BeatInstance, SettingsScheduleEntry
from common.monitoring.services.beat_leadership import LOCK_KEYS
from tests.processes import wait_until

pytestmark = pytest.mark.integration

INTERVAL = 2  # seconds between slots
TAKEOVER = 5  # BEAT_TAKEOVER_TIMEOUT for these beats
BEAT_ENV = {"BEAT_TAKEOVER_TIMEOUT": str(TAKEOVER)}


def runs(name: str) -> list:
    return list(
        TaskResult.objects.filter(periodic_task_name=name)
        .order_by("date_created")
        .values_list("date_created", flat=True)
    )


def leader_pid() -> int | None:
    row = BeatInstance.objects.filter(is_leader=True, stopped_at__isnull=True).order_by("-last_tick").first()
    return row.pid if row else None


def start_leader_and_standby(start_worker, start_beat):
    """A worker, then a beat that leads and a second one on standby."""
    start_worker(queues="default", concurrency=1)
    first = start_beat(**BEAT_ENV)
    wait_until(lambda: leader_pid() == first.pid, 30, "the first beat to lead")
    second = start_beat(**BEAT_ENV)
    wait_until(
        lambda: BeatInstance.objects.filter(pid=second.pid, is_leader=False).exists(), 30, "the second beat on standby"
    )
    return first, second


def test_one_leader_dispatches_and_standby_takes_over_after_kill_9_without_double_slots(start_worker, start_beat):
    every, _ = IntervalSchedule.objects.get_or_create(every=INTERVAL, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="ops-slot", task="common.tasks.heartbeat", interval=every)
    first, second = start_leader_and_standby(start_worker, start_beat)
    wait_until(lambda: len(runs("ops-slot")) >= 4, 40, "slots dispatched by the leader")
    # The standby dispatched nothing: it never logged a send.
    assert "Sending due task" not in second.output()
    assert leader_pid() == first.pid

    first.kill_group()
    killed_at = time.monotonic()
    before = len(runs("ops-slot"))
    wait_until(lambda: leader_pid() == second.pid, TAKEOVER + 10, "the standby to take over")
    took_over = time.monotonic() - killed_at
    wait_until(lambda: len(runs("ops-slot")) >= before + 4, 40, "slots dispatched by the new leader")
    assert "Sending due task ops-slot" in second.output()

    stamps = runs("ops-slot")
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    # A doubled slot shows up as two runs much closer together than the interval.
    assert min(gaps) > INTERVAL * 0.5, gaps
    # The handover gap is bounded by the interval plus the takeover timeout (plus scheduling slack).
    assert max(gaps) < INTERVAL + TAKEOVER + 3, gaps
    assert took_over < TAKEOVER + 3


def lock_holder_backend() -> int | None:
    """The PostgreSQL backend pid of the session holding the beat lock in this database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
            "AND objsubid = 2 AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            LOCK_KEYS,
        )
        row = cursor.fetchone()
    return row[0] if row else None


def poison_reconciliation() -> None:
    """A removed settings entry whose save() raises (expires and expire_seconds both set): reconciliation fails."""
    hourly, _ = IntervalSchedule.objects.get_or_create(every=3600, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="retired-unsaveable", task="common.tasks.heartbeat", interval=hourly, last_run_at=timezone.now()
    )
    PeriodicTask.objects.filter(name="retired-unsaveable").update(
        expires=timezone.now() + timedelta(days=1), expire_seconds=60
    )
    SettingsScheduleEntry.objects.create(name="retired-unsaveable", last_seen_in_settings="2020-01-01T00:00Z")


LOST = r"beat lost leadership|beat stopped dispatching"


def test_leader_whose_lock_session_is_killed_stops_and_standby_takes_over_without_double_slots(
    start_worker, start_beat
):
    every, _ = IntervalSchedule.objects.get_or_create(every=INTERVAL, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="ops-slot", task="common.tasks.heartbeat", interval=every)
    # Reconciliation fails in every beat that runs it: that must neither leave a beat unguarded nor stop dispatching.
    poison_reconciliation()
    first, second = start_leader_and_standby(start_worker, start_beat)
    wait_until(lambda: len(runs("ops-slot")) >= 3, 40, "slots dispatched by the leader")
    assert "beat schedule reconciliation failed" in first.output()
    # Only the leader reconciles, and the standby (guarded despite the failing reconciliation) sends nothing.
    assert "reconciliation" not in second.output()
    assert "Sending due task" not in second.output()

    backend = lock_holder_backend()
    assert backend is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", [backend])
        assert cursor.fetchone()[0] == "doorito-beat-leadership"
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
        assert cursor.fetchone()[0]
    terminated_at = time.monotonic()
    before = len(runs("ops-slot"))

    wait_until(lambda: leader_pid() == second.pid, TAKEOVER + 5, "the standby to take over")
    took_over = time.monotonic() - terminated_at
    first.wait_for_output(LOST, timeout=TAKEOVER)
    wait_until(lambda: len(runs("ops-slot")) >= before + 4, 40, "slots dispatched by the new leader")
    assert "Sending due task ops-slot" in second.output()
    assert "beat schedule reconciliation failed" in second.output()

    # The old leader is alive, a standby again, and sent nothing after it noticed the loss.
    assert first.popen.poll() is None
    assert BeatInstance.objects.get(pid=first.pid, stopped_at__isnull=True).is_leader is False
    after_loss = re.split(LOST, first.output(), maxsplit=1)[1]
    assert "Sending due task" not in after_loss
    assert leader_pid() == second.pid

    stamps = runs("ops-slot")
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert min(gaps) > INTERVAL * 0.5, gaps  # no slot ran twice
    assert max(gaps) < INTERVAL + TAKEOVER + 3, gaps
    assert took_over < TAKEOVER + 3


def test_beat_start_disables_schedules_removed_from_settings_but_not_admin_ones(start_beat):
    every, _ = IntervalSchedule.objects.get_or_create(every=3600, period=IntervalSchedule.SECONDS)
    # Installed from settings by an earlier deploy, since removed from CELERY_BEAT_SCHEDULE.
    PeriodicTask.objects.create(name="retired-from-settings", task="common.tasks.heartbeat", interval=every)
    SettingsScheduleEntry.objects.create(name="retired-from-settings", last_seen_in_settings="2020-01-01T00:00Z")
    # Made in the admin: beat never installed it, so it must be left alone.
    PeriodicTask.objects.create(name="made-in-admin", task="common.tasks.heartbeat", interval=every)

    start_beat()

    wait_until(
        lambda: not PeriodicTask.objects.get(name="retired-from-settings").enabled, 30, "the retired entry disabled"
    )
    assert PeriodicTask.objects.get(name="made-in-admin").enabled
    managed = set(SettingsScheduleEntry.objects.filter(disabled_by_reconcile=False).values_list("name", flat=True))
    assert "cleanup-task-results" in managed
    assert "made-in-admin" not in managed
    assert PeriodicTask.objects.get(name="cleanup-task-results").enabled
