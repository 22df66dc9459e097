"""What the processes report about themselves, so an operator can see them without Celery's remote control."""

from django.db import models


class WorkerHeartbeat(models.Model):
    """One row per worker node name; the worker refreshes `last_seen` every MONITORING_HEARTBEAT_INTERVAL."""

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.IntegerField()
    queues = models.JSONField(default=list)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    tasks_done = models.BigIntegerField(default=0)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return f"{self.hostname} (pid {self.pid})"


class BeatInstance(models.Model):
    """One row per running beat process: its last tick and whether it holds the leader lock."""

    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    started_at = models.DateTimeField()
    last_tick = models.DateTimeField()
    is_leader = models.BooleanField(default=False)
    leader_since = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-is_leader", "-last_tick"]

    def __str__(self) -> str:
        return f"beat {self.hostname} (pid {self.pid})"


class SettingsScheduleEntry(models.Model):
    """A periodic task that beat installed from CELERY_BEAT_SCHEDULE, so beat can tell it from admin-made ones."""

    name = models.CharField(max_length=200, unique=True)
    # True when beat disabled it because it left settings; re-enabled if it comes back.
    disabled_by_reconcile = models.BooleanField(default=False)
    last_seen_in_settings = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ScheduleFault(models.Model):
    """A periodic task beat disabled because it could not run it (schedule not buildable, task unknown)."""

    name = models.CharField(max_length=200, unique=True)  # the PeriodicTask's name
    task = models.CharField(max_length=200)
    reason = models.TextField()
    disabled_at = models.DateTimeField()

    class Meta:
        ordering = ["-disabled_at"]

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"
