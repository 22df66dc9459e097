"""Keep beat's settings-defined schedules in step with CELERY_BEAT_SCHEDULE."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from common.monitoring.models import SettingsScheduleEntry

logger = logging.getLogger(__name__)


def _set_enabled(name: str, *, enabled: bool) -> bool:
    changed = False
    for task in PeriodicTask.objects.filter(name=name, enabled=not enabled):
        task.enabled = enabled
        task.save()  # save(), not update(): it bumps django-celery-beat's change marker, so beat reloads
        changed = True
    return changed


def reconcile_settings_schedules(*, names: Iterable[str]) -> dict:
    """Disable periodic tasks beat installed from settings that settings no longer list; admin-made ones stay."""
    names = set(names)
    now = timezone.now()
    disabled, enabled = [], []
    with transaction.atomic():
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
    report = {"disabled": sorted(disabled), "enabled": sorted(enabled), "managed": sorted(names)}
    if disabled or enabled:
        logger.info(
            "beat schedules reconciled: disabled %s, re-enabled %s",
            report["disabled"],
            report["enabled"],
            extra={"event": "beat.schedules_reconciled", **report},
        )
    return report
