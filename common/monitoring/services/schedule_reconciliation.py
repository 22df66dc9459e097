"""Keep beat's settings-defined schedules in step with CELERY_BEAT_SCHEDULE."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from common.monitoring.models import SettingsScheduleEntry

logger = logging.getLogger(__name__)

# Entries renamed to the background-tasks reference's names: {old name: new name}. django-celery-beat
# re-creates its own `celery.backend_cleanup` at every start; `cleanup-task-results` replaces it.
RENAMED_SCHEDULES = {
    "outbox-sweep": "deliver-outbox-events-sweep",
    "outbox-cleanup": "cleanup-delivered-outbox-events",
    "portal-cleanup-expired-uploads": "cleanup-expired-upload-files",
    "portal-notify-expiring-files": "notify-expiring-files",
    "broker-cleanup": "cleanup-broker-messages",
    "celery.backend_cleanup": "cleanup-task-results",
}


def _set_enabled(name: str, *, enabled: bool) -> bool:
    changed = False
    for task in PeriodicTask.objects.filter(name=name, enabled=not enabled):
        task.enabled = enabled
        task.save()  # save(), not update(): it bumps django-celery-beat's change marker, so beat reloads
        changed = True
    return changed


def _fold_renamed(*, old: str, new: str) -> bool:
    """Fold the row of a renamed entry into its new one: its last run, run count and an operator's disabling."""
    previous = PeriodicTask.objects.select_for_update().filter(name=old).first()
    current = PeriodicTask.objects.select_for_update().filter(name=new).first()
    if previous is None or current is None:
        return False
    # The later of the two runs wins, so no slot the old name already ran runs again under the new one.
    if previous.last_run_at and (current.last_run_at is None or previous.last_run_at > current.last_run_at):
        current.last_run_at = previous.last_run_at
    current.total_run_count += previous.total_run_count
    tracked = SettingsScheduleEntry.objects.filter(name=old, disabled_by_reconcile=True).exists()
    if not previous.enabled and not tracked:
        current.enabled = False  # the operator turned it off under its old name
    current.save()  # save() bumps django-celery-beat's change marker: beat reloads without the old row
    previous.delete()
    SettingsScheduleEntry.objects.filter(name=old).delete()
    return True


def reconcile_settings_schedules(*, names: Iterable[str], renamed: dict[str, str] | None = None) -> dict:
    """Fold renamed entries into their new names; disable settings entries settings no longer list (not admin ones)."""
    names = set(names)
    renamed = RENAMED_SCHEDULES if renamed is None else renamed
    now = timezone.now()
    disabled, enabled = [], []
    with transaction.atomic():
        folded = sorted(old for old, new in renamed.items() if new in names and _fold_renamed(old=old, new=new))
        known = {entry.name: entry for entry in SettingsScheduleEntry.objects.select_for_update()}
        for name, entry in known.items():
            if name not in names and not entry.disabled_by_reconcile:
                if _set_enabled(name, enabled=False):
                    disabled.append(name)
                    entry.disabled_by_reconcile = True
                    entry.save(update_fields=["disabled_by_reconcile"])
                else:
                    # Already disabled (or deleted) by an operator: that choice is theirs, so we stop
                    # tracking it and will never re-enable it, even if it returns to settings.
                    entry.delete()
            elif name in names and entry.disabled_by_reconcile:
                # It came back to settings: undo our own disabling (and only ours).
                if _set_enabled(name, enabled=True):
                    enabled.append(name)
                entry.disabled_by_reconcile = False
                entry.save(update_fields=["disabled_by_reconcile"])
        for name in names:
            SettingsScheduleEntry.objects.update_or_create(name=name, defaults={"last_seen_in_settings": now})
    report = {"disabled": sorted(disabled), "enabled": sorted(enabled), "renamed": folded, "managed": sorted(names)}
    if disabled or enabled or folded:
        logger.info(
            "beat schedules reconciled: disabled %s, re-enabled %s, renamed %s",
            report["disabled"],
            report["enabled"],
            report["renamed"],
            extra={"event": "beat.schedules_reconciled", **report},
        )
    return report
