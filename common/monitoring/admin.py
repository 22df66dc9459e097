"""Read-only admin views of what processes report; the status page itself is routed in boot/urls.py."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from common.monitoring.models import BeatInstance, ScheduleFault, SettingsScheduleEntry, WorkerHeartbeat


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the processes themselves: an operator reads them, never edits them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # stale rows age out after MONITORING_RETENTION


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("hostname", "pid", "queues", "last_seen", "tasks_done", "started_at", "stopped_at")


@admin.register(BeatInstance)
class BeatInstanceAdmin(ReadOnlyAdmin):
    list_display = ("hostname", "pid", "is_leader", "leader_since", "last_tick", "started_at", "stopped_at")


@admin.register(SettingsScheduleEntry)
class SettingsScheduleEntryAdmin(ReadOnlyAdmin):
    list_display = ("name", "disabled_by_reconcile", "last_seen_in_settings")


@admin.register(ScheduleFault)
class ScheduleFaultAdmin(ReadOnlyAdmin):
    list_display = ("name", "task", "reason", "disabled_at")
